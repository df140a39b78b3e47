"""`chorus deploy compose`: the docker-compose.yml of one app, from its agents.

One service per agent (so `--scale NAME=4` scales that agent alone) beside what every app needs:
Redis with a password, append-only file and noeviction; PostgreSQL for the audit trail; the
auditor; Flower behind basic auth; the metrics exporter; the simulator under the offline profile.
Every published port is bound to 127.0.0.1.
"""

# ruff: noqa: E501  (template lines are the generated file's lines, some longer than 100)

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.deploy_spec import (
    BUILTIN_COMPOSE_SERVICES,
    DeployAgent,
    DeploySpec,
    ExtraService,
    check,
    check_extras,
    header,
    quote,
    render,
)

_TEMPLATE = """\
{{header}}
{{intro}}
#   REDIS_PASSWORD=... POSTGRES_PASSWORD=... FLOWER_PASSWORD=... {{extra_env}}ANTHROPIC_API_KEY=... \\
#   docker compose up -d
#   docker compose up -d --scale {{first_agent}}=4  # scale one agent type alone
# Offline (local Claude simulator instead of the API):
#   REDIS_PASSWORD=... POSTGRES_PASSWORD=... FLOWER_PASSWORD=... {{extra_env}}ANTHROPIC_API_KEY=offline \\
#   ANTHROPIC_BASE_URL=http://simulator:8765 docker compose --profile offline up -d
# Passwords go into URLs: use URL-safe ones (e.g. `openssl rand -hex 32`).
name: {{app}}

x-chorus-env: &chorus-env
  {{app_env}}
  CHORUS_REDIS_URL: &redis-url "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"
  ANTHROPIC_API_KEY: "${ANTHROPIC_API_KEY:?set ANTHROPIC_API_KEY (any value with the offline profile)}"
  ANTHROPIC_BASE_URL: "${ANTHROPIC_BASE_URL:-}"

# Agent workers also reach the SQL audit trail (the auditor below gets the same URL).
x-chorus-db-env: &chorus-db-env
  <<: *chorus-env
  CHORUS_DATABASE_URL: &database-url "postgresql+psycopg://chorus:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@postgres:5432/chorus"

# Prefetch: workers/app.py sets worker_prefetch_multiplier=1 with the threads pool, so a worker
# reserves at most CHORUS_WORKER_CONCURRENCY messages, one per free thread; whatever is still in
# an agent's Redis lists is backlog no worker can start yet (`chorus metrics` reports it).
x-agent-worker: &agent-worker
  build: .
  image: {{image}}
  environment: *chorus-db-env
  depends_on:
    redis:
      condition: service_healthy
  restart: unless-stopped
  # Warm shutdown: let in-flight model calls finish before the container is killed.
  stop_signal: SIGTERM
  stop_grace_period: 120s

services:
  redis:
    image: redis:7.4-alpine
    command:
      - redis-server
      - --requirepass
      - "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
      - --appendonly
      - "yes"
      - --maxmemory-policy
      - noeviction
    volumes:
      - redis-data:/data
    healthcheck:
      test: ["CMD-SHELL", "redis-cli -a \\"$$REDIS_PASSWORD\\" --no-auth-warning ping | grep PONG"]
      interval: 5s
      timeout: 3s
      retries: 10
    environment:
      REDIS_PASSWORD: "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    restart: unless-stopped

  postgres:
    image: postgres:17-alpine
    environment:
      POSTGRES_USER: chorus
      POSTGRES_DB: chorus
      POSTGRES_PASSWORD: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    volumes:
      - postgres-data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U chorus -d chorus"]
      interval: 5s
      timeout: 3s
      retries: 10
    restart: unless-stopped

  # Drains the audit stream that agents append to in Redis into PostgreSQL, in batches. Several
  # may run (`--scale auditor=2`): they share one consumer group.
  auditor:
    build: .
    image: {{image}}
    command: ["chorus", "auditor"]
    environment:  # no API key: the auditor never calls a model
      {{app_env_ref}}
      CHORUS_REDIS_URL: *redis-url
      CHORUS_DATABASE_URL: *database-url
    depends_on:
      redis:
        condition: service_healthy
      postgres:
        condition: service_healthy
    restart: unless-stopped
    stop_grace_period: 30s

  {{agents}}
  flower:
    build: .
    image: {{image}}
    environment:
      <<: *chorus-env
      FLOWER_BASIC_AUTH: "${FLOWER_USER:-admin}:${FLOWER_PASSWORD:?set FLOWER_PASSWORD}"
    command: ["chorus", "flower", "--address", "0.0.0.0", "--port", "5555"]
    ports:
      - "127.0.0.1:5555:5555"
    depends_on:
      redis:
        condition: service_healthy
    restart: unless-stopped

  # Prometheus exporter: steps, calls, tokens, cost, errors per agent and model, and the queue
  # backlog per priority sub-list. Scrape http://127.0.0.1:9808/metrics.
  metrics:
    build: .
    image: {{image}}
    command: ["chorus", "metrics", "--address", "0.0.0.0", "--port", "9808"]
    environment:
      {{app_env_ref}}
      CHORUS_REDIS_URL: *redis-url
    ports:
      - "127.0.0.1:9808:9808"
    depends_on:
      redis:
        condition: service_healthy
    restart: unless-stopped

  simulator:
    profiles: ["offline"]
    build: .
    image: {{image}}
    command: ["python", "-m", "simulator", "--host", "0.0.0.0", "--port", "8765"]
  {{extra_services}}

volumes:
  redis-data:
  postgres-data:
"""

_AGENT = """\
{{name}}:
  <<: *agent-worker
  command: ["chorus", "worker", {{name_quoted}}]
  {{concurrency}}
"""

_CONCURRENCY = """\
environment:
  <<: *chorus-db-env
  CHORUS_WORKER_CONCURRENCY: {{concurrency}}"""


def compose_file(spec: DeploySpec, extra_services: Sequence[ExtraService] = ()) -> str:
    """The whole docker-compose.yml for `spec`'s app, header comments included."""
    check(spec, reserved=BUILTIN_COMPOSE_SERVICES | {extra.name for extra in extra_services})
    check_extras(spec, extra_services, BUILTIN_COMPOSE_SERVICES)
    return render(
        _TEMPLATE,
        header=header(spec, "compose"),
        intro=_intro(spec),
        first_agent=spec.agents[0].name,
        app=spec.app_name,
        app_env="" if spec.app_ref is None else f"CHORUS_APP: &chorus-app {quote(spec.app_ref)}",
        app_env_ref="" if spec.app_ref is None else "CHORUS_APP: *chorus-app",
        image=spec.image,
        agents="".join(_agent(agent) + "\n" for agent in spec.agents),
        extra_services="".join("\n" + extra.compose(spec) for extra in extra_services),
        extra_env="".join(f"{name}=... " for extra in extra_services for name in extra.compose_env),
    )


def _intro(spec: DeploySpec) -> str:
    services = (
        "Redis (broker + shared state), PostgreSQL (audit trail), one service per\n# agent type, "
        "the auditor (audit stream -> SQL), Flower, the metrics exporter."
    )
    if spec.app_ref is None:
        return f"# Chorus on one host: {services}"
    return (
        f"# Chorus app `{spec.app_name}` on one host: {services}\n# Every Chorus process loads "
        f"the app from CHORUS_APP={spec.app_ref}; `build: .` builds the\n# Dockerfile beside "
        "this file, which must install chorus and the app."
    )


def _agent(agent: DeployAgent) -> str:
    concurrency = (
        ""
        if agent.concurrency is None
        else render(_CONCURRENCY, concurrency=quote(str(agent.concurrency)))
    )
    return render(_AGENT, name=agent.name, name_quoted=quote(agent.name), concurrency=concurrency)
