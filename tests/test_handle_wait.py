"""`TaskHandle.wait` against a real Redis and no workers: a wait that gives up leaves no
subscription behind for the garbage collector to clean up later, perhaps against a Redis that
has gone away (Celery's `AsyncResult.__del__` then retries for minutes in whatever thread it
runs in)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_redis
from dispatcher.handle import TaskTimeoutError
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
