"""Templates of the Chorus pods: one worker Deployment + ScaledObject per agent, the auditor,
Flower and the metrics exporter. Slots are filled by dispatcher/deploy_k8s.py.

The pieces every Chorus pod shares (security contexts, config, the Redis URL) are snippets here,
so a fix to one reaches every pod and the Pod Security checks stay true for all of them.
"""

from __future__ import annotations

POD_SECURITY = """\
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
"""

CONTAINER_SECURITY = """\
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
"""

ENV_FROM = """\
envFrom:
  - configMapRef:
      name: chorus-config
"""

REDIS_ENV = """\
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: chorus-secrets
      key: redis-password
- name: CHORUS_REDIS_URL
  value: redis://:$(REDIS_PASSWORD)@redis:6379/0
"""

AGENT = """\
{{marker}}
# Agent `{{agent}}`: a Deployment consuming queue {{queue}}, scaled by KEDA on that queue's
# backlog. Why one trigger per priority list: "How KEDA measures an agent's backlog" in Chorus's
# deploy/README.md.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{deployment}}
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: chorus-worker
    app.kubernetes.io/part-of: {{app}}
    chorus/agent: {{agent}}
spec:
  # No `replicas`: KEDA's HPA owns the count (re-applying this file must not reset it).
  selector:
    matchLabels:
      app.kubernetes.io/name: chorus-worker
      chorus/agent: {{agent}}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: chorus-worker
        app.kubernetes.io/part-of: {{app}}
        chorus/agent: {{agent}}
    spec:
      # SIGTERM starts Celery's warm shutdown: in-flight model calls finish, unstarted messages
      # stay in Redis. A call still running at the deadline is redelivered (late acks).
      terminationGracePeriodSeconds: 120
      {{pod_security}}
      containers:
        - name: worker
          image: {{image}}
          command: ["chorus", "worker", {{agent_quoted}}]
          {{env_from}}
          env:
            {{redis_env}}
            - name: CHORUS_DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: database-url
            - name: ANTHROPIC_API_KEY
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: anthropic-api-key
            {{concurrency}}
          # Alive = this pod's Celery node answers a ping. The node is named
          # `{{agent}}.<random>@<pod name>`, hence the glob on the pod's hostname.
          livenessProbe:
            exec:
              command:
                - python
                - -c
                - >-
                  import os, sys; from workers.app import app;
                  sys.exit(0 if app.control.ping(pattern="*@" + os.environ["HOSTNAME"],
                  matcher="glob", limit=1, timeout=10) else 1)
            initialDelaySeconds: 30
            periodSeconds: 60
            timeoutSeconds: 30
            failureThreshold: 3
          resources:
            requests:
              cpu: 250m
              memory: 384Mi
            limits:
              memory: 768Mi
          {{container_security}}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir: {}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{deployment}}
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
    chorus/agent: {{agent}}
spec:
  scaleTargetRef:
    name: {{deployment}}
  # At least one: `chorus run` refuses to submit to a queue nobody consumes.
  minReplicaCount: 1
  maxReplicaCount: 20
  pollingInterval: 15
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          policies:
            - type: Percent
              value: 50
              periodSeconds: 60
    # kombu keeps each Celery priority step in its own Redis list; the backlog is their sum.
    # {{target}} waiting messages per replica: half a worker's threads (CHORUS_WORKER_CONCURRENCY).
    scalingModifiers:
      formula: "{{formula}}"
      target: "{{target}}"
      metricType: AverageValue
  triggers:
    {{triggers}}
"""

CONCURRENCY_ENV = """\
# This agent's own thread count (the ConfigMap's is the default); the scaler follows it.
- name: CHORUS_WORKER_CONCURRENCY
  value: "{{concurrency}}"
"""

TRIGGER = """\
- type: redis
  name: {{name}}
  authenticationRef:
    name: chorus-redis
  metadata:
    # The KEDA operator runs in another namespace: full service name.
    address: redis.{{namespace}}.svc.cluster.local:6379
    databaseIndex: "0"
    listName: {{list_name}}
    listLength: "{{target}}"
"""

AUDITOR = """\
{{marker}}
# `chorus auditor`: drains the audit stream that agents append to in Redis into SQL, in batches.
# More replicas share one consumer group; an auditor that dies mid-batch has its entries claimed
# by another after 60 s, and the idempotent insert makes the replay harmless.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: auditor
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: chorus-auditor
    app.kubernetes.io/part-of: {{app}}
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: chorus-auditor
  template:
    metadata:
      labels:
        app.kubernetes.io/name: chorus-auditor
        app.kubernetes.io/part-of: {{app}}
    spec:
      terminationGracePeriodSeconds: 30
      {{pod_security}}
      containers:
        - name: auditor
          image: {{image}}
          command: ["chorus", "auditor"]
          {{env_from}}
          env:
            {{redis_env}}
            - name: CHORUS_DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: database-url
          resources:
            requests:
              cpu: 100m
              memory: 256Mi
            limits:
              memory: 512Mi
          {{container_security}}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir: {}
"""

FLOWER = """\
{{marker}}
# Flower on the app's Celery app, basic auth from the Secret (flower-basic-auth, user:password).
# ClusterIP only: reach it with `kubectl -n {{namespace}} port-forward svc/flower 5555`, or put an
# Ingress with TLS in front of it.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: flower
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: flower
    app.kubernetes.io/part-of: {{app}}
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: flower
  template:
    metadata:
      labels:
        app.kubernetes.io/name: flower
        app.kubernetes.io/part-of: {{app}}
    spec:
      {{pod_security}}
      containers:
        - name: flower
          image: {{image}}
          command: ["chorus", "flower", "--address", "0.0.0.0", "--port", "5555"]
          {{env_from}}
          env:
            {{redis_env}}
            - name: FLOWER_BASIC_AUTH
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: flower-basic-auth
          ports:
            - name: http
              containerPort: 5555
          # /healthcheck is the one Flower page served without auth.
          readinessProbe:
            httpGet:
              path: /healthcheck
              port: http
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthcheck
              port: http
            initialDelaySeconds: 30
            periodSeconds: 30
          resources:
            requests:
              cpu: 100m
              memory: 256Mi
            limits:
              memory: 512Mi
          {{container_security}}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir: {}
---
apiVersion: v1
kind: Service
metadata:
  name: flower
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: flower
    app.kubernetes.io/part-of: {{app}}
spec:
  selector:
    app.kubernetes.io/name: flower
  ports:
    - name: http
      port: 5555
      targetPort: http
"""

METRICS = """\
{{marker}}
# `chorus metrics`: Prometheus exporter for the fleet (steps, calls, tokens, cost, errors per agent
# and model; queue backlog per priority sub-list), read from Redis. Scrape svc/metrics:9808.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: metrics
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: chorus-metrics
    app.kubernetes.io/part-of: {{app}}
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: chorus-metrics
  template:
    metadata:
      labels:
        app.kubernetes.io/name: chorus-metrics
        app.kubernetes.io/part-of: {{app}}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9808"
        prometheus.io/path: /metrics
    spec:
      {{pod_security}}
      containers:
        - name: metrics
          image: {{image}}
          command: ["chorus", "metrics", "--address", "0.0.0.0", "--port", "9808"]
          {{env_from}}
          env:
            {{redis_env}}
          ports:
            - name: metrics
              containerPort: 9808
          readinessProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: 30
          resources:
            requests:
              cpu: 50m
              memory: 128Mi
            limits:
              memory: 256Mi
          {{container_security}}
---
apiVersion: v1
kind: Service
metadata:
  name: metrics
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: chorus-metrics
    app.kubernetes.io/part-of: {{app}}
spec:
  selector:
    app.kubernetes.io/name: chorus-metrics
  ports:
    - name: metrics
      port: 9808
      targetPort: metrics
"""
