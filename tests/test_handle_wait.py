"""`TaskHandle.wait` against a real Redis and no workers: sending subscribes to nothing, a wait
finds a result stored before it began, and a wait that gives up leaves no subscription behind
for the garbage collector to clean up later, perhaps against a Redis that has gone away
(Celery's `AsyncResult.__del__` then retries for minutes in whatever thread it runs in)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_redis
from dispatcher.handle import TaskTimeoutError
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
