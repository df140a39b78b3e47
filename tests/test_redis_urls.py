"""sentinel:// URLs for broker, results and shared state: how they are read, what the app
configures from them, and the clients (the retry's reconnect, WAIT) against real Sentinels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import SentinelManagedConnection

from dispatcher.embedded import free_port
from tests.sentinel_group import SentinelGroup, start_sentinel_group
from workers import redis_urls, replicas
from workers.app import create_app
from workers.runtime import state_client
from workers.settings import Settings

# -- the URL ----------------------------------------------------------------------------------


def test_a_sentinel_list_reads_as_kombu_and_celery_read_it() -> None:
    url = "sentinel://:s3cret@h1:26379/2;sentinel://h2:26380/2;sentinel://h3"
    assert redis_urls.is_sentinel(url)
    assert not redis_urls.is_sentinel("redis://h1:6379/0")
    target = redis_urls.parse_sentinel(url)
    assert target.sentinels == (("h1", 26379), ("h2", 26380), ("h3", 26379))
    assert (target.db, target.username, target.password) == (2, None, "s3cret")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://h1:26379,h2:26379", "cannot read the port"),
        ("sentinel://h1:26379;redis://h2:6379", "is not a sentinel:// URL"),
        ("sentinel://h1:26379/zero", "database must be a number"),
    ],
)
def test_a_list_it_cannot_read_is_refused_with_the_form_that_works(url: str, problem: str) -> None:
    with pytest.raises(redis_urls.RedisURLError, match=problem) as caught:
        create_app(Settings(redis_url=url)).conf.broker_transport_options  # noqa: B018
    assert "sentinel://h1:26379;sentinel://h2:26379/0" in str(caught.value)


def test_broker_and_results_get_the_master_name_and_the_sentinels_password() -> None:
    url = "sentinel://127.0.0.1:26379/0;sentinel://127.0.0.1:26380/0"
    settings = Settings(redis_url=url, sentinel_master="prod", sentinel_password="pw")
    app = create_app(settings)
    for options in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
        assert options["master_name"] == "prod"
        assert options["sentinel_kwargs"]["password"] == "pw"
    assert type(app.backend).__name__ == "SentinelResultBackend"
    assert "pw" not in repr(settings)
    plain = create_app(Settings(redis_url="redis://127.0.0.1:6379/0")).conf
    assert "master_name" not in plain.broker_transport_options


def test_settings_read_the_master_name_and_the_wait_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CHORUS_SENTINEL_MASTER": "prod",
            "CHORUS_REDIS_WAIT_REPLICAS": "1",
            "CHORUS_REDIS_WAIT_TIMEOUT_MS": "50",
        }
    )
    assert settings.sentinel_master == "prod"
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (1, 50)
    assert Settings.from_env({}).sentinel_master == "mymaster"


# -- the clients ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lone_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A primary and one Sentinel: enough to find it by name (no failover)."""
    group = start_sentinel_group(tmp_path_factory.mktemp("lone"), replicas=0, sentinels=1)
    yield group
    group.stop()


@pytest.mark.parametrize("connection_class", [redis_urls.FailoverAwareConnection, None])
def test_a_retry_reconnects_to_where_the_sentinels_say_the_primary_is(
    lone_sentinel: SentinelGroup, connection_class: type[redis.Connection] | None
) -> None:
    """What a failover leaves: a pooled connection whose address is the dead primary's.
    redis-py's own Sentinel connection retries there (redis/redis-py#3874); Chorus's asks."""
    options: dict[str, Any] = {"retry": Retry(NoBackoff(), 2)}
    if connection_class is None:
        options["connection_class"] = SentinelManagedConnection
    client = redis_urls.client(lone_sentinel.url, master=lone_sentinel.master, **options)
    assert client.ping()
    connection = client.connection_pool.get_connection()
    connection.disconnect()
    connection.port = free_port()  # nothing listens there, as on a killed primary's port
    # A command's retry sends on the same connection: send_packed_command reconnects it.
    if connection_class is None:
        with pytest.raises(redis.ConnectionError, match="Connection refused"):
            connection.send_command("PING")
        return
    connection.send_command("PING")
    assert connection.read_response() == b"PONG"
    assert connection.port == lone_sentinel.primary_port


def test_the_state_client_finds_the_primary_by_name_and_waits_short_without_replicas(
    lone_sentinel: SentinelGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "SHORT_WAITS", replicas.ShortWaits())
    client = state_client(
        lone_sentinel.url, 2.0, sentinel_master=lone_sentinel.master, wait_replicas=1,
        wait_timeout_ms=20,
    )  # fmt: skip
    assert isinstance(client.connection_pool, redis_urls.BlockingSentinelConnectionPool)
    sha = str(client.script_load("return redis.call('INCR', KEYS[1])"))
    assert client.evalsha(sha, 1, "n") == 1  # the script's own reply, after the WAIT
    assert replicas.SHORT_WAITS.count == 1  # no replica to acknowledge it
    assert client.evalsha(sha, 1, "n") == 2  # WAITs paused: no second 20 ms
    assert replicas.SHORT_WAITS.count == 1
    with pytest.raises(redis.exceptions.NoScriptError):
        client.evalsha("0" * 40, 0)  # an error of the script still raises
