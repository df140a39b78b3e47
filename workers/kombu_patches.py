"""Guards on kombu's Redis QoS, so a Redis restart does not kill a worker.

When the broker connection drops, Celery closes the old connection and opens a new one. Two
kombu 5.x code paths then touch the old, torn-down channel and raise `AttributeError`
(`'NoneType' object has no attribute 'hostname'` / `'client'`; the same trap as
celery/kombu#582 and #970):

- closing the channel tries to put the messages this worker holds back on their queues
  (`QoS.restore_unacked`);
- a call that was in flight during the outage finishes and acknowledges its message on the old
  channel (`QoS.ack`, `QoS.reject`), or publishes its hand-off on it (`Channel._put`).

Celery does not count `AttributeError` as a connection error and stops the worker with
"Unrecoverable error". Here it becomes the `redis.ConnectionError` it really is, which Celery
handles: it logs "Couldn't ack" and carries on. Nothing is lost: those messages stay in Redis's
`unacked` hash and the fleet restores them after the visibility timeout; their steps are
idempotent by message id, so the redelivery returns the stored result.

Publishing (`Channel._put`) also writes each agent message to the transit ledger, in the same
pipeline and ahead of its LPUSH (see workers/transit.py for why).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from workers import transit

_INSTALLED = False


def _channel_closed(channel: Any) -> bool:
    transport = getattr(channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


def _as_connection_error(
    method: Callable[..., Any], channel_of: Callable[[Any], Any]
) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except AttributeError as exc:
            if not _channel_closed(channel_of(self)):
                raise
            raise redis.ConnectionError(
                f"broker connection already closed ({exc}); the message stays unacknowledged "
                "in Redis and is redelivered after the visibility timeout"
            ) from exc

    return guarded


def _put_tracked(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
    """kombu 5.7's `Channel._put`, with the transit ledger's commands ahead of the LPUSH."""
    pri = self._get_message_priority(message, reverse=False)
    key = self._q_for_pri(queue, pri)
    element = transit.dumps(message)
    commands = [*transit.ledger_commands(key, message, element), ("lpush", key, element)]
    if self._expires and queue in self._expires:
        for step in self.priority_steps:
            commands.append(("pexpire", self._q_for_pri(queue, step), self._expires[queue]))
    publish_batch = kwargs.pop("_publish_batch", None)
    if publish_batch is not None:
        for name, *args in commands:
            publish_batch.add(name, *args)
        return
    with self.conn_or_acquire() as client:
        if len(commands) == 1:
            client.lpush(key, element)
            return
        with client.pipeline() as pipe:
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()


def install() -> None:
    """Idempotent; called when the Celery app is created."""
    global _INSTALLED
    if _INSTALLED:
        return
    qos: Any = kombu_redis.QoS
    for name in ("restore_unacked", "ack", "reject"):
        setattr(qos, name, _as_connection_error(getattr(qos, name), lambda q: q.channel))
    # A hand-off published on the old channel: as a connection error, kombu's publish retry
    # (task_publish_retry_policy) revives the channel and sends it again.
    channel: Any = kombu_redis.Channel
    channel._put = _as_connection_error(_put_tracked, lambda c: c)
    _INSTALLED = True
