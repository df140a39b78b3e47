"""Chorus's kombu transport (workers/transport.py), each override against a real Redis: the transit
ledger around kombu's BRPOP window, a torn-down channel as a connection error, one client per
channel, and kombu's own classes untouched for every other connection in the process."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
from kombu import Producer, Queue
from kombu.transport import redis as kombu_redis

import dispatcher  # noqa: F401  (a producer process imports Chorus, then makes its own connections)
from dispatcher.embedded import free_port, start_redis
from tests.private_redis import private_redis
from tests.sentinel_group import SentinelGroup, start_sentinel_group
from workers import keys, replicas, transport
from workers.app import create_app
from workers.settings import Settings
from workers.transport import (
    QoS,
    SentinelTransport,
    Transport,
    ahead_of_publish,
    check_kombu_version,
)

QUEUE = "agent.summarizer"
HEADERS = {"task": "chorus.agent.summarizer", "id": "celery-task-1"}
"""What makes a message an agent message the ledger tracks."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


@pytest.fixture
def url(client: redis.Redis) -> str:
    client.flushdb()
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@pytest.fixture
def watcher(url: str) -> Iterator[redis.Redis]:
    """A client for MONITOR; its timeout fails a test instead of hanging it."""
    connection = redis.Redis.from_url(url, socket_timeout=5)
    yield connection
    connection.close()


@pytest.fixture
def chorus_connection(url: str) -> Iterator[kombu.Connection]:
    with kombu.Connection(url, transport=Transport) as connection:
        yield connection


def bound_queue(channel: Any) -> Any:
    queue = Queue(QUEUE, routing_key=QUEUE)(channel)
    queue.declare()
    return queue


def publish(channel: Any, headers: dict[str, str] | None = None) -> None:
    Producer(channel).publish(
        {"hello": "world"}, routing_key=QUEUE, serializer="json", headers=headers or HEADERS
    )


def commands_until(monitor: Any, verb: str) -> list[str]:
    """What MONITOR saw, up to and including the first `verb` command."""
    seen: list[str] = []
    while not seen or not seen[-1].upper().startswith(verb):
        seen.append(monitor.next_command()["command"])
    return seen


def torn_down(channel: Any) -> None:
    """What a Redis restart leaves for a call still in flight: Celery dropped the connection's
    transport client and the channel's pools while the channel object lives on."""
    channel._disconnect_pools()
    channel.connection.client = None


# -- the transit ledger ------------------------------------------------------------------------


def test_a_published_agent_message_is_on_the_ledger_before_it_is_on_its_queue(
    chorus_connection: kombu.Connection, client: redis.Redis, watcher: redis.Redis
) -> None:
    channel = chorus_connection.channel()
    bound_queue(channel)
    with watcher.monitor() as monitor:
        publish(channel)
        seen = commands_until(monitor, "LPUSH")

    ledger = next(i for i, c in enumerate(seen) if c.startswith(f"HSET {keys.TRANSIT} "))
    assert ledger < len(seen) - 1, seen  # the LPUSH comes last
    assert client.hexists(keys.TRANSIT, HEADERS["id"])
    assert client.zscore(keys.TRANSIT_INDEX, HEADERS["id"]) is not None


def test_receiving_takes_it_off_the_ledger_in_the_transaction_that_records_it_unacked(
    chorus_connection: kombu.Connection, client: redis.Redis, watcher: redis.Redis
) -> None:
    channel = chorus_connection.channel()
    queue = bound_queue(channel)
    publish(channel)
    with watcher.monitor() as monitor:
        message = queue.get(no_ack=False)
        seen = commands_until(monitor, "EXEC")

    transaction = seen[next(i for i, c in enumerate(seen) if c == "MULTI") :]
    assert any(c.startswith("HSET unacked ") for c in transaction)
    assert any(c.startswith(f"HDEL {keys.TRANSIT} {HEADERS['id']}") for c in transaction)
    assert not client.hexists(keys.TRANSIT, HEADERS["id"])
    assert client.hexists("unacked", message.delivery_tag)

    message.ack()
    assert not client.hexists("unacked", message.delivery_tag)


def test_a_message_that_is_no_agent_task_stays_off_the_ledger(
    chorus_connection: kombu.Connection, client: redis.Redis
) -> None:
    channel = chorus_connection.channel()
    bound_queue(channel)
    publish(channel, headers={"task": "celery.chord_unlock", "id": "other"})
    assert client.hlen(keys.TRANSIT) == 0
    assert client.llen(QUEUE) == 1


def test_commands_ahead_of_publish_go_in_the_publishs_pipeline_before_the_message(
    chorus_connection: kombu.Connection, client: redis.Redis, watcher: redis.Redis
) -> None:
    channel = chorus_connection.channel()
    bound_queue(channel)
    with watcher.monitor() as monitor, ahead_of_publish([("HSET", "task-hash", "a", "1")]) as left:
        publish(channel)
        seen = commands_until(monitor, "LPUSH")
        assert left == []  # sent: the caller need not send them itself
    assert [c.split()[0] for c in seen][-4:] == ["HSET", "HSET", "ZADD", "LPUSH"]
    assert seen[-4].startswith("HSET task-hash")


# -- a torn-down channel is a connection error --------------------------------------------------


def test_acking_on_a_torn_down_channel_is_a_connection_error(
    chorus_connection: kombu.Connection, client: redis.Redis
) -> None:
    channel = chorus_connection.channel()
    queue = bound_queue(channel)
    publish(channel)
    message = queue.get(no_ack=False)

    torn_down(channel)
    with pytest.raises(redis.ConnectionError, match="redelivered after the visibility timeout"):
        message.ack()
    with pytest.raises(redis.ConnectionError):
        channel.qos.reject(message.delivery_tag)
    with pytest.raises(redis.ConnectionError):
        channel.qos.restore_unacked()
    assert client.hexists("unacked", message.delivery_tag)  # it waits for the restore


def test_publishing_on_a_torn_down_channel_is_a_connection_error(
    chorus_connection: kombu.Connection,
) -> None:
    channel = chorus_connection.channel()
    bound_queue(channel)
    torn_down(channel)
    with pytest.raises(redis.ConnectionError):
        publish(channel)


def test_plain_kombu_raises_attribute_error_there_which_is_why_the_guard_exists(
    url: str,
) -> None:
    with kombu.Connection(url) as connection:
        channel = connection.channel()
        queue = bound_queue(channel)
        publish(channel)
        message = queue.get(no_ack=False)
        torn_down(channel)
        with pytest.raises(AttributeError):
            message.ack()


# -- one client per channel ---------------------------------------------------------------------


def test_a_channel_reuses_one_client_on_its_own_pool(chorus_connection: kombu.Connection) -> None:
    channel: Any = chorus_connection.channel()
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
        assert first.connection_pool is channel.pool
    given = redis.Redis()
    with channel.conn_or_acquire(given) as passed:
        assert passed is given
    channel._disconnect_pools()  # a new pool (after a reconnect) gets a new client
    with channel.conn_or_acquire() as third:
        assert third is not first
        assert third.connection_pool is channel.pool


# -- nothing global ----------------------------------------------------------------------------


def test_a_plain_kombu_connection_in_the_same_process_is_plain_kombu(
    url: str, client: redis.Redis
) -> None:
    create_app(Settings(redis_url=url)).connection_for_write().ensure_connection()
    with kombu.Connection(url) as connection:
        channel: Any = connection.channel()
        assert type(connection.transport) is kombu_redis.Transport
        assert type(channel) is kombu_redis.Channel
        assert type(channel.qos) is kombu_redis.QoS
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is not second  # kombu's own: a client per call
        bound_queue(channel)
        publish(channel)
    assert client.hlen(keys.TRANSIT) == 0
    for cls, names in (
        (kombu_redis.Channel, ("_put", "conn_or_acquire")),
        (kombu_redis.QoS, ("append", "ack", "reject", "restore_unacked")),
    ):
        for name in names:
            assert vars(cls)[name].__module__ == "kombu.transport.redis", (cls, name)


def test_the_transport_refuses_a_kombu_it_was_not_written_for(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(transport.KombuVersionError, match=r"for kombu 5\.7\.x, but kombu 5\.8\.0"):
        check_kombu_version("5.8.0")
    check_kombu_version("5.7.3")
    monkeypatch.setattr(kombu, "__version__", "6.0.0")
    with (
        pytest.raises(transport.KombuVersionError, match=r"6\.0\.0"),
        kombu.Connection(url, transport=Transport) as connection,
    ):
        connection.connect()


# -- how the app selects it --------------------------------------------------------------------


def test_the_app_selects_the_transport_for_redis_and_sentinel_urls() -> None:
    plain = create_app(Settings(redis_url="redis://127.0.0.1:6379/0")).connection_for_write()
    assert plain.transport_cls == transport.TRANSPORT
    assert type(plain.transport) is Transport

    urls = "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380"
    sentinel = create_app(Settings(redis_url=urls)).connection_for_write()
    assert sentinel.transport_cls == transport.SENTINEL_TRANSPORT
    assert type(sentinel.transport) is SentinelTransport
    assert SentinelTransport.Channel.QoS is QoS
    assert issubclass(SentinelTransport.Channel, kombu_redis.SentinelChannel)
    assert sentinel.alt == urls.split(";")


def test_a_rediss_url_still_means_tls_and_its_ssl_query_still_wins() -> None:
    bare = create_app(Settings(redis_url="rediss://h:6380/0")).conf
    assert bare.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_NONE}  # what kombu does
    url = "rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"
    app = create_app(Settings(redis_url=url))
    wanted = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}
    assert app.connection_for_write().ssl == app.conf.broker_use_ssl == wanted
    assert not create_app(Settings(redis_url="redis://h/0")).conf.broker_use_ssl


@pytest.mark.parametrize(
    ("url", "flower_client"),
    [
        ("redis://:secret@127.0.0.1:6379/2", "Redis"),
        ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=required", "RedisSsl"),
        ("sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380", "RedisSentinel"),
    ],
)
def test_connections_name_the_urls_scheme_so_flower_finds_its_broker_client(
    url: str, flower_client: str
) -> None:
    """kombu would name the transport's class path (workers.transport:Transport://...), and
    Flower picks the client that reads queue lengths by the scheme."""
    from flower.utils.broker import Broker

    app = create_app(Settings(redis_url=url))
    connection = app.connection_for_write()
    uri = connection.as_uri(include_password=True)
    assert uri.split("://")[0] == url.split("://")[0]
    assert connection.clone().transport_cls == connection.transport_cls  # still ours
    options = {"master_name": "mymaster"} if url.startswith("sentinel") else {}
    broker = Broker(uri, broker_options=options, broker_use_ssl=app.conf.broker_use_ssl)
    assert type(broker).__name__ == flower_client


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    server, _ = start_redis(folder, extra_args=tls)
    yield port, cert
    server.stop()


@pytest.mark.parametrize("query", ["?ssl_cert_reqs=required&ssl_ca_certs={cert}", ""])
def test_messages_travel_over_tls_through_the_chorus_transport(
    tls_redis: tuple[int, Path], query: str
) -> None:
    port, cert = tls_redis
    url = f"rediss://127.0.0.1:{port}/0" + query.format(cert=cert)
    with create_app(Settings(redis_url=url)).connection_for_write() as connection:
        channel: Any = connection.channel()
        assert isinstance(channel, transport.Channel)
        queue = bound_queue(channel)
        publish(channel)
        message = queue.get(no_ack=False)
        assert message.payload == {"hello": "world"}
        message.ack()
        assert channel.pool.connection_class is redis.SSLConnection


# -- Sentinel, failover and WAIT ---------------------------------------------------------------


def test_kombus_failover_to_the_next_url_keeps_the_chorus_transport() -> None:
    """kombu's `switch` takes the transport from the next URL's scheme: a worker reconnecting
    while a Sentinel primary is down would carry on with plain kombu (no ledger removal)."""
    urls = "sentinel://127.0.0.1:26379/0;sentinel://127.0.0.1:26380/0"
    connection = create_app(Settings(redis_url=urls)).connection_for_write()
    connection.maybe_switch_next()
    assert connection.port == 26380
    assert connection.transport_cls == transport.SENTINEL_TRANSPORT
    assert type(connection.transport) is SentinelTransport
    assert connection.as_uri().startswith("sentinel://")
    with kombu.Connection(urls) as plain:  # kombu's own, for comparison: the scheme wins
        plain.maybe_switch_next()
        assert plain.transport_cls == "sentinel"


def test_the_wait_setting_reaches_the_broker_but_not_the_result_backend() -> None:
    conf = create_app(Settings(redis_wait_replicas=1, redis_wait_timeout_ms=30)).conf
    assert conf.broker_transport_options["chorus_wait_replicas"] == 1
    assert conf.broker_transport_options["chorus_wait_timeout_ms"] == 30
    assert "chorus_wait_replicas" not in conf.result_backend_transport_options
    assert "chorus_wait_replicas" not in create_app(Settings()).conf.broker_transport_options


def test_with_wait_a_publish_waits_for_replicas_after_its_lpush_then_pauses_when_short(
    url: str, client: redis.Redis, watcher: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "SHORT_WAITS", replicas.ShortWaits())
    options = {"chorus_wait_replicas": 1, "chorus_wait_timeout_ms": 10}
    with kombu.Connection(url, transport=Transport, transport_options=options) as connection:
        channel = connection.channel()
        bound_queue(channel)
        with watcher.monitor() as monitor:
            publish(channel)
            seen = commands_until(monitor, "WAIT")
        verbs = [c.split()[0] for c in seen]
        assert verbs[-4:] == ["HSET", "ZADD", "LPUSH", "WAIT"]  # one plain pipeline, in order
        assert "MULTI" not in verbs  # WAIT inside MULTI would not block
        assert client.hexists(keys.TRANSIT, HEADERS["id"])
        # This Redis has no replica: the WAIT came back short, so WAITs pause for a while.
        assert replicas.SHORT_WAITS.count == 1
        assert not replicas.SHORT_WAITS.active()
        with watcher.monitor() as monitor:
            publish(channel, headers={**HEADERS, "id": "celery-task-2"})
            seen = commands_until(monitor, "EXEC")
        assert not any(c.startswith("WAIT") for c in seen)


def test_with_wait_a_receipt_waits_after_it_leaves_the_ledger(
    url: str, client: redis.Redis, watcher: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "SHORT_WAITS", replicas.ShortWaits())
    monkeypatch.setattr(replicas, "SUSPEND_SECONDS", 0.0)  # no pause: this Redis has no replica
    options = {"chorus_wait_replicas": 1, "chorus_wait_timeout_ms": 10}
    with kombu.Connection(url, transport=Transport, transport_options=options) as connection:
        channel = connection.channel()
        queue = bound_queue(channel)
        publish(channel)
        with watcher.monitor() as monitor:
            message = queue.get(no_ack=False)
            seen = commands_until(monitor, "WAIT")
        receipt = [
            c.split()[0] for c in seen[next(i for i, c in enumerate(seen) if "unacked" in c) :]
        ]
        assert receipt[:3] == ["ZADD", "HSET", "HDEL"]  # `unacked` first, then off the ledger
        assert receipt[-1] == "WAIT"
        assert "MULTI" not in receipt
        assert not client.hexists(keys.TRANSIT, HEADERS["id"])
        assert client.hexists("unacked", message.delivery_tag)
        message.ack()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A primary watched by one Sentinel: enough to reach it by name."""
    group = start_sentinel_group(tmp_path_factory.mktemp("sentinel"), replicas=0, sentinels=1)
    yield group
    group.stop()


def test_the_sentinel_channel_keeps_the_ledger_on_the_primary_it_found(
    sentinel: SentinelGroup,
) -> None:
    primary = redis.Redis(port=sentinel.primary_port)
    primary.flushdb()
    options = {"master_name": sentinel.master}
    url = sentinel.url
    with kombu.Connection(url, transport=SentinelTransport, transport_options=options) as conn:
        channel: Any = conn.channel()
        assert isinstance(channel, transport.SentinelChannel)
        queue = bound_queue(channel)
        publish(channel)
        assert primary.hexists(keys.TRANSIT, HEADERS["id"])
        message = queue.get(no_ack=False)
        assert not primary.hexists(keys.TRANSIT, HEADERS["id"])
        assert primary.hexists("unacked", message.delivery_tag)
        message.ack()
        assert not primary.hexists("unacked", message.delivery_tag)
