"""The web console (`chorus console`) as an extra service of the generated deployment files.

Behind auth like Flower: Compose requires CONSOLE_PASSWORD (the login is CONSOLE_USER, default
admin) and binds the port to 127.0.0.1; Kubernetes reads the login and the cookie-signing key
from the chorus-secrets Secret and keeps the Service ClusterIP. The console reads the audit
trail too (tasks Redis has expired), so it gets the database URL.
"""

from __future__ import annotations

from dispatcher import deploy_k8s_pods as pods
from dispatcher.deploy_spec import DeploySpec, ExtraService, SecretKey, render

PORT = "5556"

_COMPOSE = """\
# `chorus console`: tasks with their cost, each task's message tree (live), the review queue
# (approve or reject as the logged-in user) and dead letters with retry. Log in at
# http://127.0.0.1:{{port}}/ as CONSOLE_USER (default admin) with CONSOLE_PASSWORD. Sessions
# survive a restart when CONSOLE_SECRET (32+ random characters) is set.
console:
  build: .
  image: {{image}}
  command: ["chorus", "console", "--address", "0.0.0.0", "--port", "{{port}}"]
  environment:
    <<: *chorus-db-env
    CHORUS_CONSOLE_AUTH: "${CONSOLE_USER:-admin}:${CONSOLE_PASSWORD:?set CONSOLE_PASSWORD}"
    CHORUS_CONSOLE_SECRET: "${CONSOLE_SECRET:-}"
  ports:
    - "127.0.0.1:{{port}}:{{port}}"
  depends_on:
    redis:
      condition: service_healthy
    postgres:
      condition: service_healthy
  restart: unless-stopped
"""

_K8S = """\
# `chorus console` for reviewers and operators: login and cookie-signing key from the Secret
# (console-basic-auth, user:password; console-cookie-secret). ClusterIP only: reach it with
# `kubectl -n {{namespace}} port-forward svc/console {{port}}`, or put an Ingress with TLS in
# front of it (then add --proxy-headers to the command, so session cookies are marked Secure).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: console
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: chorus-console
    app.kubernetes.io/part-of: {{app}}
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: chorus-console
  template:
    metadata:
      labels:
        app.kubernetes.io/name: chorus-console
        app.kubernetes.io/part-of: {{app}}
    spec:
      {{pod_security}}
      containers:
        - name: console
          image: {{image}}
          command: ["chorus", "console", "--address", "0.0.0.0", "--port", "{{port}}"]
          {{env_from}}
          env:
            {{redis_env}}
            - name: CHORUS_DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: database-url
            - name: CHORUS_CONSOLE_AUTH
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: console-basic-auth
            - name: CHORUS_CONSOLE_SECRET
              valueFrom:
                secretKeyRef:
                  name: chorus-secrets
                  key: console-cookie-secret
          ports:
            - name: http
              containerPort: {{port}}
          # /healthz is the one console path served without auth; it says only "ok".
          readinessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthz
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
  name: console
  namespace: {{namespace}}
  labels:
    app.kubernetes.io/name: chorus-console
    app.kubernetes.io/part-of: {{app}}
spec:
  selector:
    app.kubernetes.io/name: chorus-console
  ports:
    - name: http
      port: {{port}}
      targetPort: http
"""


def _compose(spec: DeploySpec) -> str:
    return render(_COMPOSE, image=spec.image, port=PORT)


def _k8s(spec: DeploySpec) -> str:
    return render(
        _K8S,
        namespace=spec.app_name,
        app=spec.app_name,
        image=spec.image,
        port=PORT,
        pod_security=pods.POD_SECURITY,
        container_security=pods.CONTAINER_SECURITY,
        env_from=pods.ENV_FROM,
        redis_env=pods.REDIS_ENV,
    )


CONSOLE = ExtraService(
    name="console",
    compose=_compose,
    k8s=_k8s,
    secret_keys=(
        SecretKey(
            key="console-basic-auth",
            comment="user:password for the web console's login (several: user:pw,user:pw).",
            placeholder="admin:CHANGE-ME-console-password",
            create='"admin:$(openssl rand -hex 16)"',
        ),
        SecretKey(
            key="console-cookie-secret",
            comment="Signs the web console's session cookies: 32+ random characters.",
            placeholder="CHANGE-ME-console-cookie-secret",
            create='"$(openssl rand -hex 32)"',
        ),
    ),
    compose_env=("CONSOLE_PASSWORD",),
)
"""The console service, as dispatcher/deploy.py's EXTRA_SERVICES ships it."""
