"""A message lost between kombu's BRPOP and its `unacked` record (a worker killed in that
instant, or Redis stopping in it) is put back on its queue; messages merely waiting are not
touched, and a normal run leaves the ledger empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_redis, start_worker, wait_until
from dispatcher.metrics import queue_lists
from workers import keys
from workers.app import create_app
from workers.registry import AGENTS
from workers.settings import Settings
from workers.transit import Reaper


@pytest.fixture
def own_stack(
    tmp_path: Path, stack_env: dict[str, str]
) -> Iterator[tuple[dict[str, str], redis.Redis]]:
    """A Redis of its own, so the ledger and queues hold only this test's messages."""
    server, url = start_redis(tmp_path)
    env = {**stack_env, "CHORUS_REDIS_URL": url, "CHORUS_AUDIT": "0"}
    env["CHORUS_TRANSIT_CHECK_SECONDS"] = "2"
    yield env, redis.Redis.from_url(url)
    server.stop()


def summarizer_worker(env: dict[str, str], log_dir: Path) -> ManagedProcess:
    worker = start_worker(["summarizer"], env, log_dir, concurrency=4)
    dispatcher = Dispatcher(create_app(Settings.from_env(env)))
    wait_until(
        lambda: AGENTS["summarizer"].queue in dispatcher.consumed_queues(0.5),
        timeout=60,
        what="summarizer worker",
    )
    return worker


def test_a_message_popped_by_a_worker_that_died_before_recording_it_is_put_back(
    own_stack: tuple[dict[str, str], redis.Redis], log_dir: Path
) -> None:
    env, client = own_stack
    dispatcher = Dispatcher(create_app(Settings.from_env(env)))
    handle = dispatcher.submit(
        "Summarize the outage report", pattern="pipeline", steps=["summarizer"]
    )
    assert client.hexists(keys.TRANSIT, handle.task_id)

    # Exactly what a worker killed right after its BRPOP leaves behind: the message is in no
    # queue and in no `unacked` hash, so the visibility timeout can never bring it back.
    popped = client.brpop(queue_lists(AGENTS["summarizer"].queue), timeout=5)
    assert popped is not None
    assert client.hlen("unacked") == 0

    worker = summarizer_worker(env, log_dir)
    try:
        outcome = handle.wait(60)
    finally:
        worker.stop()

    assert outcome.status == "done"
    assert [step.agent for step in handle.trace()] == ["summarizer"]
    assert client.hlen(keys.TRANSIT) == 0, "the redelivered message is off the ledger"
    assert "lost between the broker and a worker" in worker.log_path.read_text()


def test_messages_waiting_in_a_queue_are_left_where_they_are(
    own_stack: tuple[dict[str, str], redis.Redis],
) -> None:
    env, client = own_stack
    dispatcher = Dispatcher(create_app(Settings.from_env(env)))
    for n in range(3):
        dispatcher.submit(f"request {n}", pattern="pipeline", steps=["summarizer"])
    queue = AGENTS["summarizer"].queue

    reaper = Reaper(client, grace=0, confirm=0)
    first, second = reaper.sweep(), reaper.sweep()

    assert first["on_its_way"] == second["on_its_way"] == 3
    assert first["restored"] == second["restored"] == 0
    assert sum(int(client.llen(name)) for name in queue_lists(queue)) == 3


def test_a_normal_run_leaves_the_ledger_empty(
    own_stack: tuple[dict[str, str], redis.Redis], log_dir: Path
) -> None:
    env, client = own_stack
    worker = summarizer_worker(env, log_dir)
    dispatcher = Dispatcher(create_app(Settings.from_env(env)))
    try:
        handles = [
            dispatcher.submit(f"request {n}", pattern="pipeline", steps=["summarizer"])
            for n in range(5)
        ]
        assert all(h.wait(60).status == "done" for h in handles)
    finally:
        worker.stop()
    assert client.hlen(keys.TRANSIT) == 0
    assert client.zcard(keys.TRANSIT_INDEX) == 0
