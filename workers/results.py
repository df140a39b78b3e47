"""Celery's Redis result backend, with connections that wait out a Redis restart.

The stock backend retries storing a result (`result_backend_always_retry`), but not the chord
bookkeeping a branch does when it finishes (`on_chord_part_return`): a connection error there,
while Redis restarts, becomes a "join error", the chord's size key is dropped and the merge step
is never sent, so the task stays `running` for good. With these connections every command of
the backend waits for Redis (backoff capped at 1 s, for CHORUS_REDIS_OUTAGE_SECONDS), as the
state client does. The chord script is safe to repeat: a branch's result is a sorted-set member.

Selected by `result_backend = "workers.results:ResultBackend+redis://..."` (Celery's
`backend+url` form), so nothing in Celery is patched.
"""

from __future__ import annotations

from typing import Any

import redis
from celery.backends.redis import RedisBackend
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

BACKEND = "workers.results:ResultBackend"


class ResultBackend(RedisBackend):  # type: ignore[misc]
    def _create_client(self, **params: Any) -> Any:
        settings = getattr(self.app, "settings", None)
        attempts = max(1, int(getattr(settings, "redis_outage_seconds", 30)))
        params.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), attempts))
        params.setdefault("retry_on_error", [redis.ConnectionError, redis.TimeoutError])
        return super()._create_client(**params)


def backend_url(url: str) -> str:
    """The result_backend setting for a Chorus URL: this backend for redis:// and rediss://,
    Celery's own (its Sentinel backend) for anything else."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return f"{BACKEND}+{url}"
    return url
