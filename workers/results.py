"""Celery's Redis result backends, with connections that wait out a Redis restart and no
result subscription at send time.

The stock backend retries storing a result (`result_backend_always_retry`), but not the chord
bookkeeping a branch does when it finishes (`on_chord_part_return`): a connection error there,
while Redis restarts, becomes a "join error", the chord's size key is dropped and the merge step
is never sent, so the task stays `running` for good. With these connections every command of
the backend waits for Redis (backoff capped at 1 s, for CHORUS_REDIS_OUTAGE_SECONDS), as the
state client does. The chord script is safe to repeat: a branch's result is a sorted-set member.

Celery subscribes a producer to every task's result channel as it sends the task
(`on_task_call`), in case it waits. A Chorus producer mostly does not, and the result object
is dropped at once, so every submit paid a subscribe and an unsubscribe. Waiting subscribes
anyway (`AsyncResult.get` does, then reads the stored result), so nothing is missed.

A lost result connection is re-made once per error (`ResultConsumer._reconnect`), not in
Celery's retry loop: that loop (20 tries, each calling a client that itself waits for Redis)
made a reconnect wait up to 20 times CHORUS_REDIS_OUTAGE_SECONDS, in whatever thread the
garbage collector ran an `AsyncResult.__del__` in (seen: a producer stalled 929 s after a
Sentinel failover, and a test process for minutes after its Redis was gone). `TaskHandle.wait`
goes on waiting, to its own timeout, across a reconnect that failed.

Selected by `result_backend = "workers.results:ResultBackend+redis://..."` (Celery's
`backend+url` form; SentinelResultBackend for sentinel://), so nothing in Celery is patched.
"""

from __future__ import annotations

from typing import Any

import redis
from celery.backends import redis as celery_redis
from celery.backends.redis import RedisBackend, SentinelBackend
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

BACKEND = "workers.results:ResultBackend"
SENTINEL_BACKEND = "workers.results:SentinelResultBackend"


class ResultConsumer(celery_redis.ResultConsumer):  # type: ignore[misc]
    def _reconnect(self) -> None:
        """One attempt (see the module docstring); a failure reaches the caller."""
        self._reconnect_pubsub()


class _ChorusResults:
    """What both Chorus backends change in Celery's: the consumer, and no send-time subscribe."""

    ResultConsumer = ResultConsumer

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Subscribe when a caller waits, not when it sends (see the module docstring)."""


class ResultBackend(_ChorusResults, RedisBackend):  # type: ignore[misc]
    def _create_client(self, **params: Any) -> Any:
        settings = getattr(self.app, "settings", None)
        attempts = max(1, int(getattr(settings, "redis_outage_seconds", 30)))
        params.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), attempts))
        params.setdefault("retry_on_error", [redis.ConnectionError, redis.TimeoutError])
        return super()._create_client(**params)


class SentinelResultBackend(_ChorusResults, SentinelBackend):  # type: ignore[misc]
    """Celery's Sentinel backend (its pool finds the primary again after a failover)."""


def backend_url(url: str) -> str:
    """The result_backend setting for a Chorus URL: these backends for redis://, rediss://,
    unix:// and sentinel://, Celery's own for anything else."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return f"{BACKEND}+{url}"
    if url.startswith("sentinel://"):
        return f"{SENTINEL_BACKEND}+{url}"
    return url
