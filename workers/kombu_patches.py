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
pipeline and ahead of its LPUSH; receiving (`QoS.append`) takes it off the ledger in the same
transaction that records it as unacknowledged (see workers/transit.py for why).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

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


_AHEAD: ContextVar[list[tuple[Any, ...]] | None] = ContextVar("chorus_ahead", default=None)


@contextmanager
def ahead_of_publish(commands: list[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """Send raw Redis `commands` in the same pipeline as, and before, the next message this
    context publishes (the Dispatcher's task hash: it must exist before a worker can take
    the message, and so it costs no round trip of its own). Yields the commands still unsent:
    empty once a publish took them."""
    pending = list(commands)
    token = _AHEAD.set(pending)
    try:
        yield pending
    finally:
        _AHEAD.reset(token)


def _put_tracked(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
    """kombu 5.7's `Channel._put`, with the transit ledger's commands ahead of the LPUSH (and
    any `ahead_of_publish` commands ahead of those)."""
    pri = self._get_message_priority(message, reverse=False)
    key = self._q_for_pri(queue, pri)
    element = transit.dumps(message)
    ahead = _AHEAD.get() or []
    commands = [
        *(("execute_command", *command) for command in ahead),
        *transit.ledger_commands(key, message, element),
        ("lpush", key, element),
    ]
    if self._expires and queue in self._expires:
        for step in self.priority_steps:
            commands.append(("pexpire", self._q_for_pri(queue, step), self._expires[queue]))
    publish_batch = kwargs.pop("_publish_batch", None)
    if publish_batch is not None:
        for name, *args in commands:
            publish_batch.add(name, *args)
        ahead.clear()  # sent with the batch's flush, or not at all if the flush fails
        return
    with self.conn_or_acquire() as client:
        if len(commands) == 1:
            client.lpush(key, element)
            return
        with client.pipeline() as pipe:
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()
    ahead.clear()  # only once written: a publish retried after an error sends them again


def _append_tracked(self: Any, message: Any, delivery_tag: str) -> None:
    """kombu 5.7's `QoS.append`, plus the ledger removal inside its MULTI/EXEC: the message is
    never in neither place (a worker holds it from here; the visibility timeout guards it)."""
    delivery = message.delivery_info
    entry = transit.dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
    with self.pipe_or_acquire() as pipe:
        pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
        pipe.hset(self.unacked_key, delivery_tag, entry)
        task_id = transit.tracked(message._raw)
        if task_id is not None:
            transit.received(pipe, task_id)
        pipe.execute()
    virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]


@contextmanager
def _shared_client(self: Any, client: Any = None) -> Iterator[Any]:
    """kombu 5.7's `Channel.conn_or_acquire` builds a new `redis.Redis` for every publish, ack
    and unacked record (about 50 µs of constructor each, several per hop). One client per
    channel and connection pool serves them all: redis-py clients are thread-safe, and
    connections still come from, and go back to, the channel's pool."""
    if client:
        yield client
        return
    shared = self.__dict__.get("_chorus_client")
    if shared is None or shared.connection_pool is not self.pool:
        shared = self.__dict__["_chorus_client"] = self._create_client()
    yield shared


def install() -> None:
    """Idempotent; called when the Celery app is created."""
    global _INSTALLED
    if _INSTALLED:
        return
    qos: Any = kombu_redis.QoS
    qos.append = _append_tracked
    for name in ("restore_unacked", "ack", "reject"):
        setattr(qos, name, _as_connection_error(getattr(qos, name), lambda q: q.channel))
    # A hand-off published on the old channel: as a connection error, kombu's publish retry
    # (task_publish_retry_policy) revives the channel and sends it again.
    channel: Any = kombu_redis.Channel
    channel.conn_or_acquire = _shared_client
    channel._put = _as_connection_error(_put_tracked, lambda c: c)
    _INSTALLED = True
