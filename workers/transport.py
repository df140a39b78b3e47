"""Chorus's kombu transport: kombu's Redis transport, subclassed, for Chorus's connections alone.

kombu makes `Transport.Channel` and `Channel.QoS` class attributes to be subclassed; Chorus's
Celery app selects these classes with `broker_transport` (workers/broker_options.py), so a
process that imports Chorus and opens a kombu connection of its own still gets plain kombu.
What they add:

- **The transit ledger** (workers/transit.py). Publishing (`Channel._put`) writes each agent
  message to the ledger in the same pipeline, ahead of its LPUSH; receiving (`QoS.append`)
  takes it off the ledger in the MULTI/EXEC that records it as unacknowledged, so at every
  instant the message is in its queue, in the ledger or in `unacked`.
- **A torn-down channel is a connection error.** When the broker connection drops, Celery closes
  the old connection and opens a new one. Two kombu 5.x code paths then touch the old channel
  and raise `AttributeError` (`'NoneType' object has no attribute 'hostname'` / `'client'`;
  the trap of celery/kombu#582 and #970): closing it puts this worker's messages back
  (`QoS.restore_unacked`), and a call in flight during the outage acknowledges its message
  (`QoS.ack`, `QoS.reject`) or publishes its hand-off (`Channel._put`) on it. Celery does not
  count `AttributeError` as a connection error and stops the worker ("Unrecoverable error");
  as the `redis.ConnectionError` it really is, Celery logs "Couldn't ack" and carries on, and a
  publish is retried on a revived channel (task_publish_retry_policy). Nothing is lost: the
  messages stay in `unacked` and come back after the visibility timeout; their steps are
  idempotent by message id.
- **One redis client per channel** (`conn_or_acquire`): kombu builds a `redis.Redis` for every
  publish, ack and unacked record (about 50 µs each, several per hop). redis-py clients are
  thread-safe, and connections still come from, and go back to, the channel's pool.
- **`ahead_of_publish`**: raw commands sent in the pipeline of, and ahead of, the next publish
  (the Dispatcher's task hash, which must exist before a worker can take the message).
- **WAIT for replicas** (`chorus_wait_replicas`, `chorus_wait_timeout_ms` transport options,
  from CHORUS_REDIS_WAIT_REPLICAS): each agent message's publish, and each receipt, returns
  once that many replicas have it, so a Sentinel failover cannot lose a message its publisher
  saw sent, nor hand a message a worker runs to a second worker (workers/replicas.py). WAIT
  cannot block inside MULTI, so these pipelines are then plain ones, still in order: the
  ledger needs its entry ahead of the LPUSH, and `unacked` written before the entry goes.
- **URLs that name their scheme**: with an explicit transport kombu prints its class path as the
  URL's scheme; the app's `Connection` (through Celery's `amqp_cls`) prints redis://,
  rediss:// or sentinel:// again, which Flower needs to find its broker client. It also keeps
  this transport when kombu fails over to the next URL of a `;` list (kombu would take the
  transport from that URL's scheme, and the worker would go on with plain kombu).

The overrides are written against kombu 5.7's code (they replace `_put` and `QoS.append`
whole); the transport refuses to start on another kombu version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import kombu
import redis
from celery.app import amqp as celery_amqp
from kombu.connection import Connection as KombuConnection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from messages.errors import ChorusError
from workers import replicas, transit
from workers.broker_options import (
    SENTINEL_TRANSPORT,
    TRANSPORT,
    WAIT_OPTIONS,
    celery_options,
)

log = logging.getLogger(__name__)

KOMBU_SERIES = "5.7"
"""The kombu release series these overrides were written for (pyproject pins 5.7.x)."""


class KombuVersionError(ChorusError):
    """The installed kombu is not the one the transport's overrides were written for."""


def check_kombu_version(version: str | None = None) -> None:
    """Refuse a kombu outside KOMBU_SERIES: `_put` and `QoS.append` copy its code."""
    found = kombu.__version__ if version is None else version
    if found.split(".")[:2] != KOMBU_SERIES.split("."):
        raise KombuVersionError(
            f"workers.transport was written for kombu {KOMBU_SERIES}.x, but kombu {found} is "
            f"installed: install kombu=={KOMBU_SERIES}.* (pyproject.toml pins it), or port "
            "Channel._put and QoS.append in workers/transport.py to the new version"
        )


_SCHEMES = {TRANSPORT: "redis", SENTINEL_TRANSPORT: "sentinel"}


class Connection(KombuConnection):
    """kombu's Connection, naming the broker URL's own scheme where kombu would name the
    transport's class path (`as_uri`, the worker banner, the repr): Flower chooses its broker
    client (queue lengths) by that scheme. Clones, and the failover to the next URL of a `;`
    list, keep the transport class."""

    def _info(self, resolve: bool = True) -> tuple[tuple[str, Any], ...]:
        info: tuple[tuple[str, Any], ...] = super()._info(resolve)  # type: ignore[no-untyped-call]
        scheme = _SCHEMES.get(self.transport_cls) if resolve else None
        if scheme is None:
            return info
        if scheme == "redis" and self.ssl:
            scheme = "rediss"
        return tuple((name, scheme if name == "transport" else value) for name, value in info)

    def switch(self, conn_str: str) -> None:
        """kombu's move to the next URL of a `;` list (its failover after a connection error:
        with sentinel:// URLs, every reconnect while the primary is down) takes the transport
        from that URL's scheme, so the worker would carry on with plain kombu: no ledger
        removal on receipt (the reaper then puts every later message back as lost) and no
        closed-channel guards. Chorus's transport stays."""
        ours = self.transport_cls in _SCHEMES
        super().switch(conn_str)  # type: ignore[no-untyped-call]
        if ours and "://" in conn_str:
            self.transport_cls = celery_options(conn_str)["broker_transport"]


class AMQP(celery_amqp.AMQP):  # type: ignore[misc]
    """Celery's AMQP with Chorus's Connection (`amqp_cls = "workers.transport:AMQP"`)."""

    Connection = Connection


# -- a torn-down channel is a connection error -------------------------------------------------


def _channel_closed(channel: Any) -> bool:
    transport = getattr(channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


@contextmanager
def _closed_channel_is_connection_error(channel: Any) -> Iterator[None]:
    try:
        yield
    except AttributeError as exc:
        if not _channel_closed(channel):
            raise
        raise redis.ConnectionError(
            f"broker connection already closed ({exc}); the message stays unacknowledged "
            "in Redis and is redelivered after the visibility timeout"
        ) from exc


# -- raw commands ahead of the next publish ----------------------------------------------------

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


# -- the classes -------------------------------------------------------------------------------


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with the ledger removal and the closed-channel guards."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu 5.7's `QoS.append`, plus the ledger removal inside its MULTI/EXEC: the message
        is never in neither place (a worker holds it from here; the visibility timeout guards
        it). With WAIT on, a plain pipeline in the same order, then the WAIT: a replica that
        has this receipt has the BRPOP before it too, so a failover cannot put the message
        back on its queue for a second worker while this one runs it."""
        delivery = message.delivery_info
        entry = transit.dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        channel: Any = self.channel
        wait = int(channel.chorus_wait_replicas) if replicas.SHORT_WAITS.active() else 0
        timeout_ms = int(channel.chorus_wait_timeout_ms)
        with channel.conn_or_acquire() as client, client.pipeline(transaction=wait <= 0) as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, entry)
            task_id = transit.tracked(message._raw)
            if task_id is not None:
                transit.received(pipe, task_id)
            if wait > 0:
                pipe.execute_command(*replicas.wait_command(wait, timeout_ms))
            replies = pipe.execute()
        if wait > 0:
            replicas.SHORT_WAITS.check(replies[-1], wait, timeout_ms)
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_unacked(self, client: Any = None) -> Any:
        with _closed_channel_is_connection_error(self.channel):
            return super().restore_unacked(client)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        with _closed_channel_is_connection_error(self.channel):
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        with _closed_channel_is_connection_error(self.channel):
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]


class _ChannelOverrides:
    """What Chorus changes in kombu's Redis channel, once for the plain and Sentinel ones."""

    QoS = QoS
    chorus_wait_replicas = 0
    chorus_wait_timeout_ms = 100

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """One client per channel and connection pool instead of one per call."""
        if client:
            yield client
            return
        channel: Any = self
        shared = channel.__dict__.get("_chorus_client")
        if shared is None or shared.connection_pool is not channel.pool:
            shared = channel.__dict__["_chorus_client"] = channel._create_client()
        yield shared

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        with _closed_channel_is_connection_error(self):
            self._put_tracked(queue, message, **kwargs)

    def _put_tracked(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """kombu 5.7's `Channel._put`, with the transit ledger's commands ahead of the LPUSH
        (and any `ahead_of_publish` commands ahead of those)."""
        channel: Any = self
        pri = channel._get_message_priority(message, reverse=False)
        key = channel._q_for_pri(queue, pri)
        element = transit.dumps(message)
        ahead = _AHEAD.get() or []
        commands = [
            *(("execute_command", *command) for command in ahead),
            *transit.ledger_commands(key, message, element),
            ("lpush", key, element),
        ]
        if channel._expires and queue in channel._expires:
            for step in channel.priority_steps:
                commands.append(
                    ("pexpire", channel._q_for_pri(queue, step), channel._expires[queue])
                )
        wait = int(channel.chorus_wait_replicas) if replicas.SHORT_WAITS.active() else 0
        timeout_ms = int(channel.chorus_wait_timeout_ms)
        publish_batch = kwargs.pop("_publish_batch", None)
        if publish_batch is not None:  # kombu's batch is a plain pipeline already
            if wait > 0:
                commands.append(("execute_command", *replicas.wait_command(wait, timeout_ms)))
            for name, *args in commands:
                publish_batch.add(name, *args)
            ahead.clear()  # sent with the batch's flush, or not at all if the flush fails
            return
        with self.conn_or_acquire() as client:
            if len(commands) == 1 and wait <= 0:
                client.lpush(key, element)
                return
            with client.pipeline(transaction=wait <= 0) as pipe:
                for name, *args in commands:
                    getattr(pipe, name)(*args)
                if wait > 0:
                    pipe.execute_command(*replicas.wait_command(wait, timeout_ms))
                replies = pipe.execute()
        if wait > 0:
            replicas.SHORT_WAITS.check(replies[-1], wait, timeout_ms)
        ahead.clear()  # only once written: a publish retried after an error sends them again


def _with_wait_options(names: tuple[str, ...]) -> Any:
    """kombu's channel options plus WAIT_OPTIONS (a longer tuple than kombu's own type)."""
    return (*names, *WAIT_OPTIONS)


class Channel(_ChannelOverrides, kombu_redis.Channel):
    QoS = QoS
    from_transport_options = _with_wait_options(kombu_redis.Channel.from_transport_options)


class SentinelChannel(_ChannelOverrides, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (`master_name`, `sentinel_kwargs` transport options) with the
    same overrides: its pool is redis-py's Sentinel pool, so after a failover the reconnect
    Celery makes lands on the promoted replica and the ledger lives there too. Its connections
    stay redis-py's own, whose retries keep to the address they had: a receipt retried onto
    the new primary would record a message as taken that the new primary may still have in
    its queue (the pop was not replicated), and a second worker would run it too. Failing
    there drops the message from this worker; Celery reconnects the channel instead."""

    QoS = QoS
    from_transport_options = _with_wait_options(kombu_redis.SentinelChannel.from_transport_options)


class _CheckedStart:
    """Refuses to start on a kombu these overrides were not written for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_kombu_version()
        super().__init__(*args, **kwargs)


class Transport(_CheckedStart, kombu_redis.Transport):
    """`broker_transport = "workers.transport:Transport"` (redis:// and rediss:// URLs)."""

    Channel = Channel


class SentinelTransport(_CheckedStart, kombu_redis.SentinelTransport):
    """`broker_transport = "workers.transport:SentinelTransport"` (sentinel:// URLs)."""

    Channel = SentinelChannel
