"""Templates of the cluster plumbing every app gets: namespace, config, Secret, Redis, PostgreSQL,
network policies and KEDA's Redis credentials. Slots are filled by dispatcher/deploy_k8s.py.

Kept as text, not objects, so the comments that explain each setting stay in the output.
"""

# ruff: noqa: E501  (template lines are the generated file's lines, some longer than 100)

from __future__ import annotations

NAMESPACE = """\
{{marker}}
apiVersion: v1
kind: Namespace
metadata:
  name: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
    # Chorus pods run as a non-root user without privilege escalation.
    pod-security.kubernetes.io/enforce: restricted
"""

CONFIGMAP = """\
{{marker}}
# CHORUS_* settings shared by every Chorus pod (see the Configuration table in README.md).
# Secrets (API key, passwords, URLs that contain them) live in the chorus-secrets Secret.
apiVersion: v1
kind: ConfigMap
metadata:
  name: chorus-config
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
data:
  {{app_ref}}
  CHORUS_WORKER_CONCURRENCY: "{{concurrency}}"
  CHORUS_CALL_TIMEOUT: "60"
  CHORUS_CALL_RETRIES: "3"
  CHORUS_VISIBILITY_TIMEOUT: "600"
  CHORUS_MAX_DEPTH: "5"
  CHORUS_STATE_TTL: "3600"
  CHORUS_TASK_BUDGET_USD: "1.0"
  CHORUS_TASK_BUDGET_TOKENS: "1000000"
  CHORUS_TASK_MAX_RETRIES: "20"
  CHORUS_RATE_LIMITER: "true"
  CHORUS_AUDIT: "true"
"""

SECRET_EXAMPLE = """\
{{marker}}
# EXAMPLE ONLY: every value below is a placeholder. Not listed in kustomization.yaml on purpose,
# so `kubectl apply -k` never overwrites the real Secret. Create the real one once with
#   kubectl -n {{namespace}} create secret generic chorus-secrets \\
#     --from-literal=anthropic-api-key="$ANTHROPIC_API_KEY" \\
#     --from-literal=redis-password="$(openssl rand -hex 32)" \\
#     --from-literal=postgres-password="$POSTGRES_PASSWORD" \\
#     --from-literal=database-url="postgresql+psycopg://chorus:$POSTGRES_PASSWORD@postgres:5432/chorus" \\
{{extra_literals}}
#     --from-literal=flower-basic-auth="admin:$(openssl rand -hex 16)"
# or copy this file, replace every CHANGE-ME and apply it (and keep the copy out of git).
# Passwords end up inside URLs: use URL-safe ones (hex).
apiVersion: v1
kind: Secret
metadata:
  name: chorus-secrets
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
type: Opaque
stringData:
  # Claude API key of the agent workers.
  anthropic-api-key: "CHANGE-ME-sk-ant-..."
  # requirepass of Redis; also used by KEDA (keda-auth.yaml) to read the queue lengths.
  redis-password: "CHANGE-ME-redis-password"
  # Password of the in-cluster PostgreSQL (postgres.yaml).
  postgres-password: "CHANGE-ME-postgres-password"
  # SQLAlchemy URL of the audit trail: the in-cluster PostgreSQL with the password above, or a
  # managed database (then drop postgres.yaml from kustomization.yaml).
  database-url: "postgresql+psycopg://chorus:CHANGE-ME-postgres-password@postgres:5432/chorus"
  # user:password for Flower's basic auth.
  flower-basic-auth: "admin:CHANGE-ME-flower-password"
  {{extra_keys}}
"""

REDIS = """\
{{marker}}
# Redis: broker, results and shared state. Append-only file on, noeviction (a broker must never
# drop a queued message to make room: writes fail loudly instead), password required. maxmemory
# sits below the container limit so Redis refuses writes before the kernel kills it.
apiVersion: v1
kind: Service
metadata:
  name: redis
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: redis
    app.kubernetes.io/part-of: {{app}}
spec:
  clusterIP: None
  selector:
    app.kubernetes.io/name: redis
    app.kubernetes.io/part-of: {{app}}
  ports:
    - name: redis
      port: 6379
      targetPort: redis
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: redis
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: redis
    app.kubernetes.io/part-of: {{app}}
spec:
  serviceName: redis
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: redis
      app.kubernetes.io/part-of: {{app}}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: redis
        app.kubernetes.io/part-of: {{app}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 999
        runAsGroup: 1000
        fsGroup: 1000
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: redis
          image: redis:7.4-alpine
          args:
            - redis-server
            - --requirepass
            - $(REDIS_PASSWORD)
            - --appendonly
            - "yes"
            - --maxmemory
            - 1536mb
            - --maxmemory-policy
            - noeviction
            - --dir
            - /data
          env:
            - name: REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: redis-password
            # redis-cli reads its password from here (probes below).
            - name: REDISCLI_AUTH
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: redis-password
          ports:
            - name: redis
              containerPort: 6379
          readinessProbe:
            exec:
              command: ["sh", "-c", "redis-cli ping | grep -q PONG"]
            periodSeconds: 5
            timeoutSeconds: 3
          livenessProbe:
            exec:
              command: ["sh", "-c", "redis-cli ping | grep -q PONG"]
            initialDelaySeconds: 30
            periodSeconds: 15
            timeoutSeconds: 5
          resources:
            requests:
              cpu: 250m
              memory: 2Gi
            limits:
              memory: 2Gi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: data
              mountPath: /data
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: ["ReadWriteOnce"]
        resources:
          requests:
            storage: 10Gi
"""

POSTGRES = """\
{{marker}}
# PostgreSQL for the SQL audit trail, written only by `chorus auditor`. For a managed database,
# drop this file from kustomization.yaml and point the Secret's database-url at it.
apiVersion: v1
kind: Service
metadata:
  name: postgres
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: postgres
    app.kubernetes.io/part-of: {{app}}
spec:
  clusterIP: None
  selector:
    app.kubernetes.io/name: postgres
    app.kubernetes.io/part-of: {{app}}
  ports:
    - name: postgres
      port: 5432
      targetPort: postgres
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: postgres
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: postgres
    app.kubernetes.io/part-of: {{app}}
spec:
  serviceName: postgres
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: postgres
      app.kubernetes.io/part-of: {{app}}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: postgres
        app.kubernetes.io/part-of: {{app}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 70
        runAsGroup: 70
        fsGroup: 70
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: postgres
          image: postgres:17-alpine
          env:
            - name: POSTGRES_USER
              value: chorus
            - name: POSTGRES_DB
              value: chorus
            - name: POSTGRES_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: postgres-password
            # A subdirectory: the volume's root may hold lost+found, which initdb refuses.
            - name: PGDATA
              value: /var/lib/postgresql/data/pgdata
          ports:
            - name: postgres
              containerPort: 5432
          readinessProbe:
            exec:
              command: ["pg_isready", "-U", "chorus", "-d", "chorus"]
            periodSeconds: 5
            timeoutSeconds: 3
          livenessProbe:
            exec:
              command: ["pg_isready", "-U", "chorus", "-d", "chorus"]
            initialDelaySeconds: 30
            periodSeconds: 15
            timeoutSeconds: 5
          resources:
            requests:
              cpu: 250m
              memory: 512Mi
            limits:
              memory: 1Gi
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: data
              mountPath: /var/lib/postgresql/data
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: ["ReadWriteOnce"]
        resources:
          requests:
            storage: 20Gi
"""

NETWORKPOLICY = """\
{{marker}}
# Redis and PostgreSQL accept connections only from Chorus pods (and Redis also from the KEDA
# operator, which reads the queue lengths). Needs a CNI that enforces NetworkPolicy.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: redis
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: redis
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/part-of: {{app}}
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: keda
      ports:
        - port: 6379
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: postgres
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: postgres
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/part-of: {{app}}
      ports:
        - port: 5432
"""

KEDA_AUTH = """\
{{marker}}
# Lets KEDA's redis scalers (agents/*.yaml) authenticate to Redis with the password from the
# chorus-secrets Secret; nothing secret is written in the ScaledObjects themselves.
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: chorus-redis
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/part-of: {{app}}
spec:
  secretTargetRef:
    - parameter: password
      name: chorus-secrets
      key: redis-password
"""

KUSTOMIZATION = """\
{{marker}}
# {{title}} on Kubernetes, in the namespace `{{namespace}}`.
# kubectl apply -k <this directory>   (after creating the Secret: see secret.example.yaml,
# deliberately not listed here). Needs KEDA >= 2.12 for agents/*.yaml. The KEDA redis address
# in agents/*.yaml names the namespace too: a kustomize `namespace:` override does not reach it.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  {{resources}}
{{images}}
"""

LOCAL_IMAGE = """\
images:
  # The image built from the Dockerfile, pushed to your registry. Or regenerate with the pushed
  # image's full name as the image: a full name needs no entry here.
  - name: {{name}}
    newName: registry.example.com/{{name}}  # CHANGE-ME
    newTag: {{tag}}  # CHANGE-ME: the version you pushed
"""
