"""`TaskHandle.wait` against a real Redis and no workers: sending subscribes to nothing, a wait
finds a result stored before it began, outlasts a Redis outage longer than the result
connection's own, and a wait that gives up leaves no subscription behind for the garbage
collector to clean up later, perhaps against a Redis that has gone away (Celery's
`AsyncResult.__del__` then retried for minutes in whatever thread it ran in)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_redis
from dispatcher.handle import TaskOutcome, TaskTimeoutError
from messages import AgentMessage
from workers.app import create_app
from workers.settings import Settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, str]]:
    process, url = start_redis(tmp_path_factory.mktemp("wait-redis"))
    yield process, url
    process.stop()


def result_channel(dispatcher: Dispatcher, task_id: str) -> str:
    """The pub/sub channel Celery's Redis backend announces a task's result on."""
    return cast(bytes, dispatcher.app.backend.get_key_for_task(task_id)).decode()


def subscribers(client: redis.Redis, channel: str) -> int:
    [(_, count)] = client.pubsub_numsub(channel)
    return int(count)


def commands(client: redis.Redis, name: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


def test_sending_subscribes_to_nothing_and_a_later_wait_still_gets_the_result(
    server: tuple[ManagedProcess, str],
) -> None:
    _, url = server
    client = redis.Redis.from_url(url)
    dispatcher = Dispatcher(create_app(Settings.from_env({"CHORUS_REDIS_URL": url})))
    before = commands(client, "subscribe")
    handles = [
        dispatcher.submit(f"request {n}", pattern="pipeline", steps=["summarizer"])
        for n in range(5)
    ]
    assert commands(client, "subscribe") == before

    final = AgentMessage.root(recipient="summarizer", payload={"text": "done"})
    dispatcher.app.backend.store_result(handles[0].task_id, final.to_dict(), "SUCCESS")
    outcome = handles[0].wait(5)

    assert outcome.message.message_id == final.message_id
    assert subscribers(client, result_channel(dispatcher, handles[0].task_id)) == 0


def test_a_wait_that_times_out_stops_listening_at_once(server: tuple[ManagedProcess, str]) -> None:
    _, url = server
    dispatcher = Dispatcher(create_app(Settings.from_env({"CHORUS_REDIS_URL": url})))
    handle = dispatcher.submit(
        "Nobody consumes this queue", pattern="pipeline", steps=["summarizer"]
    )

    with pytest.raises(TaskTimeoutError):
        handle.wait(0.5)

    client = redis.Redis.from_url(url)
    assert subscribers(client, result_channel(dispatcher, handle.task_id)) == 0


def outage_dispatcher(url: str) -> Dispatcher:
    """Every client rides out one second of outage, then gives up."""
    env = {"CHORUS_REDIS_URL": url, "CHORUS_REDIS_OUTAGE_SECONDS": "1"}
    return Dispatcher(create_app(Settings.from_env(env)))


def test_a_wait_outlasts_an_outage_longer_than_its_connections_ride_out(tmp_path: Path) -> None:
    process, url = start_redis(tmp_path)
    dispatcher = outage_dispatcher(url)
    handle = dispatcher.submit("Nobody consumes this queue", pattern="pipeline", steps=["analyst"])
    outcome: list[TaskOutcome | BaseException] = []

    def wait() -> None:
        try:
            outcome.append(handle.wait(60))
        except BaseException as exc:  # the assertion below shows it
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    client = redis.Redis.from_url(url)
    channel = result_channel(dispatcher, handle.task_id)
    deadline = time.monotonic() + 10
    while subscribers(client, channel) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition, not timing
    process.stop()
    time.sleep(3)  # the outage: three times what the result connection rides out
    (tmp_path / "again").mkdir()
    again, _ = start_redis(tmp_path / "again", urlsplit(url).port)
    try:
        final = AgentMessage.root(recipient="analyst", payload={"text": "done"})
        dispatcher.app.backend.store_result(handle.task_id, final.to_dict(), "SUCCESS")
        waiter.join(60)
        [got] = outcome
        assert isinstance(got, TaskOutcome), got
        assert got.message.message_id == final.message_id
    finally:
        again.stop()


def test_a_result_collected_after_its_redis_went_away_gives_up_within_the_outage_budget(
    tmp_path: Path,
) -> None:
    """Celery's reconnect loop (20 tries around a client that waits for Redis itself) held
    whichever thread ran the garbage collector for minutes; one attempt is the budget."""
    from celery.result import AsyncResult

    process, url = start_redis(tmp_path)
    dispatcher = outage_dispatcher(url)
    results: list[Any] = [AsyncResult(f"nobody-runs-{n}", app=dispatcher.app) for n in range(3)]
    for result in results:  # subscribed and held weakly, as Celery holds a group's members
        dispatcher.app.backend.add_pending_result(result, weak=True)
    process.stop()

    started = time.monotonic()
    del result, results  # the first unsubscribe still leaves; the next find the socket closed
    gc.collect()
    assert time.monotonic() - started < 10
