"""One guarded kombu code path, so a Redis restart does not kill a worker.

When the broker connection drops, Celery closes the old connection; kombu's Redis channel then
tries to put the messages this worker holds back on their queues (`QoS.restore_unacked`). By
then the connection's parameters are gone, so kombu 5.x raises `AttributeError: 'NoneType'
object has no attribute 'hostname'` (see celery/kombu#582 and #970 for the same trap). Celery
does not count that as a connection error and stops the worker: "Unrecoverable error".

Nothing is lost by skipping that restore: the messages stay in Redis's `unacked` hash, and
the fleet restores them after the visibility timeout (late acks; every step is idempotent by
message id). The worker stays up, reconnects, and finishes the calls it has in flight.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("chorus.worker")

_INSTALLED = False


def install() -> None:
    """Idempotent; called when the Celery app is created."""
    global _INSTALLED
    if _INSTALLED:
        return
    original: Any = kombu_redis.QoS.restore_unacked

    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except AttributeError as exc:
            log.warning(
                "broker connection already closed; %d unacknowledged message(s) stay in Redis "
                "and come back after the visibility timeout (%s)",
                len(self._delivered),
                exc,
            )
            self._delivered.clear()
            return None

    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]
    _INSTALLED = True
