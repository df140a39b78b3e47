"""Per-process resources of a worker or producer: settings, Redis, task state, Claude client.

Created lazily after fork and shared by every thread of the process.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers import redis_urls
from workers.budget import TaskBudget
from workers.models import Price
from workers.ratelimit import FleetRateLimiter
from workers.replicas import ReplicatedRedis
from workers.settings import Settings, SettingsError
from workers.state import TaskState

if TYPE_CHECKING:
    from workers.claude import ClaudeClient


def state_client(
    url: str,
    outage_seconds: float,
    max_connections: int = 100,
    *,
    sentinel_master: str = "mymaster",
    sentinel_password: str | None = None,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 100,
) -> redis.Redis:
    """A client that waits out a Redis restart or failover, and for a free connection when busy.

    Connection errors are retried with backoff capped at 1 s for about `outage_seconds`; every
    state script is idempotent by message id, so a command that ran before its reply was lost
    does no harm when repeated. With a sentinel:// URL each reconnect asks the Sentinels where
    the primary is, so the same retries carry a call across a failover. The pool blocks at
    `max_connections` instead of raising "Too many connections", so a producer with hundreds
    of waiting threads just queues. `wait_replicas` > 0: scripts WAIT for replicas
    (workers/replicas.py).
    """
    attempts = max(1, int(outage_seconds))
    client = cast(
        ReplicatedRedis,
        redis_urls.client(
            url,
            master=sentinel_master,
            sentinel_password=sentinel_password,
            blocking=True,
            redis_class=ReplicatedRedis,
            max_connections=max_connections,
            timeout=max(outage_seconds, 5.0),
            health_check_interval=30,
            socket_connect_timeout=2,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), attempts),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        ),
    )
    client.wait_replicas = wait_replicas
    client.wait_timeout_ms = wait_timeout_ms
    return client


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prices: dict[str, Price] = dict(settings.prices)
        missing = sorted({m for m in settings.tiers.values() if m not in self.prices})
        if missing:
            raise SettingsError(
                f"no price configured for model(s) {', '.join(missing)}: add them to the "
                "CHORUS_CONFIG file's [prices] (integer micro-dollars per million tokens)"
            )
        self._lock = threading.Lock()

    @cached_property
    def redis(self) -> redis.Redis:
        settings = self.settings
        # One connection per worker thread, plus room for the producer side and the limiter.
        connections = max(100, settings.worker_concurrency + 32)
        return state_client(
            settings.redis_url,
            settings.redis_outage_seconds,
            connections,
            sentinel_master=settings.sentinel_master,
            sentinel_password=settings.sentinel_password,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )

    @cached_property
    def state(self) -> TaskState:
        return TaskState(
            self.redis,
            self.settings.state_ttl,
            audit=self.settings.audit,
            audit_maxlen=self.settings.audit_maxlen,
            audit_max_age=self.settings.audit_max_age,
        )

    @cached_property
    def budget(self) -> TaskBudget:
        return TaskBudget(
            self.redis,
            default_tokens=self.settings.task_budget_tokens,
            default_micro_usd=self.settings.task_budget_micro_usd,
            ttl=self.settings.state_ttl,
        )

    @cached_property
    def limiter(self) -> FleetRateLimiter:
        return FleetRateLimiter(
            self.redis,
            self.settings.rate_limits,
            default=self.settings.default_rate_limit,
            enabled=self.settings.rate_limiter,
        )

    @property
    def claude(self) -> ClaudeClient:
        # cached_property is not thread-safe on first access; the client must be created once.
        with self._lock:
            client = self.__dict__.get("_claude")
            if client is None:
                # Imported here: only a process that calls Claude pays for the SDK's import.
                from workers.claude import ClaudeClient

                client = self.__dict__["_claude"] = ClaudeClient(self.settings)
            return client
