"""The one place a Chorus Redis URL becomes a redis-py client: one server or Redis Sentinels.

CHORUS_REDIS_URL names one server (`redis://`, `rediss://`, `unix://`) or the Sentinels that
watch a primary and its replicas, spelt as kombu's broker and Celery's result backend spell
them: `sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0`, one URL per Sentinel
joined by `;`, the database and the data server's `user:password@` in the first, the master's
name in CHORUS_SENTINEL_MASTER. A Sentinel client asks the Sentinels for the primary on every
new connection, so after a failover its next reconnect (the retries of `state_client`) lands
on the promoted replica; a connection still open to a demoted primary fails with READONLY,
which redis-py turns into a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from messages.errors import ChorusError

SCHEME = "sentinel"
SEPARATOR = ";"
"""Between the Sentinels' URLs, as kombu (`Connection.alt`) and Celery's SentinelBackend split."""
DEFAULT_PORT = 26379
SENTINEL_TIMEOUT = 2.0
"""Seconds to connect to, and hear from, one Sentinel before asking the next."""


class RedisURLError(ChorusError, ValueError):
    """CHORUS_REDIS_URL cannot be read; the message shows the form that works."""


@dataclass(frozen=True)
class SentinelURL:
    """What a sentinel:// list says: where the Sentinels are, and how to talk to the primary."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return urlparse(url.split(SEPARATOR, 1)[0].strip()).scheme == SCHEME


def parse_sentinel(url: str) -> SentinelURL:
    """The Sentinels of `url`; the database and credentials come from its first URL (as
    kombu and Celery take them)."""
    chunks = [chunk.strip() for chunk in url.split(SEPARATOR) if chunk.strip()]
    sentinels: list[tuple[str, int]] = []
    for chunk in chunks:
        parsed = urlparse(chunk)
        if parsed.scheme != SCHEME:
            raise RedisURLError(_form(f"{chunk!r} is not a sentinel:// URL"))
        try:
            port = parsed.port or DEFAULT_PORT
        except ValueError:
            raise RedisURLError(_form(f"cannot read the port of {chunk!r}")) from None
        if not parsed.hostname:
            raise RedisURLError(_form(f"{chunk!r} names no host"))
        sentinels.append((parsed.hostname, port))
    if not sentinels:
        raise RedisURLError(_form("no Sentinel given"))
    first = urlparse(chunks[0])
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise RedisURLError(_form(f"the database must be a number, got {path!r}"))
    return SentinelURL(
        sentinels=tuple(sentinels),
        db=int(path or 0),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
    )


def _form(problem: str) -> str:
    return (
        f"CHORUS_REDIS_URL: {problem}; name each Sentinel in a URL of its own, joined by ';' "
        "(sentinel://h1:26379;sentinel://h2:26379/0), as kombu and Celery read them, and the "
        "master's name in CHORUS_SENTINEL_MASTER"
    )


class FailoverAwareConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, asking the Sentinels again when a command's retry
    reconnects it. redis-py 8.1 reconnects there to the address it had (redis/redis-py#3874,
    open), so after a failover every retry of a call in flight went to the dead primary until
    the retries ran out (28 s, then the step failed) instead of finding the promoted one."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]  # asks where the primary is now
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the Sentinels for the primary on every connect) with the
    blocking pool's wait for a free connection instead of "Too many connections"."""


def client(
    url: str,
    *,
    master: str = "mymaster",
    sentinel_password: str | None = None,
    blocking: bool = False,
    redis_class: type[redis.Redis] = redis.Redis,
    **options: Any,
) -> redis.Redis:
    """A client for the server `url` names, or for the current primary of its Sentinels.

    `options` are redis-py's connection and pool keywords (`socket_timeout`, `retry`,
    `max_connections`, ...); `blocking` selects a pool that waits for a free connection.
    """
    if not is_sentinel(url):
        plain = redis.BlockingConnectionPool if blocking else redis.ConnectionPool
        return redis_class(connection_pool=plain.from_url(url, **options))
    target = parse_sentinel(url)
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_options(sentinel_password)
    )
    credentials: dict[str, Any] = {
        name: value
        for name, value in (("username", target.username), ("password", target.password))
        if value is not None
    }
    managed = BlockingSentinelConnectionPool if blocking else SentinelConnectionPool
    options = {"connection_class": FailoverAwareConnection, **options, **credentials}
    options["db"] = target.db
    pool = managed(master, manager, **options)  # type: ignore[no-untyped-call]
    return redis_class(connection_pool=pool)


def sentinel_options(password: str | None) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: short timeouts (a dead one is skipped for
    the next), and their own password if they have one."""
    options: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "socket_timeout": SENTINEL_TIMEOUT,
    }
    if password:
        options["password"] = password
    return options
