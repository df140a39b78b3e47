"""The blackboard under concurrency: many writers on one task never double an entry, because
every write is one Lua call keyed by the input message id; a delivery that raced another and
paid for its calls too is billed, not stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from chorus.seed import ROUTER_TARGETS
from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_simulator, start_worker, stop_all, wait_until
from messages import AgentMessage
from workers import keys
from workers.app import create_app
from workers.flow import StepOptions, continuation_of
from workers.registry import AGENTS
from workers.runner import Delivery, run_agent
from workers.settings import Settings
from workers.state import StepRecord, TaskState

INPUTS = 40
WRITERS = 6


def write_every_step(url: str, task_id: str, writer: int, start: threading.Barrier) -> None:
    """One writer with its own connection: takes every input of the task, as a redelivery
    storm would, and records it unless begin_step says it was handled."""
    state = TaskState(redis.Redis.from_url(url), ttl=60)
    start.wait(10)
    for number in range(INPUTS):
        if state.begin_step(task_id, f"in-{number}", "analyst").done is not None:
            continue
        state.record_step(
            StepRecord(
                task_id=task_id,
                input_message_id=f"in-{number}",
                agent="analyst",
                status="ok",
                message={"message_id": f"out-{number}-by-{writer}"},
                usage={"input_tokens": 10, "output_tokens": 3},
                cost_micro_usd=5,
                retries=1,
                finished_at="2026-11-24T14:32:00+00:00",
            ),
            final_status=None,
        )


def test_writers_racing_on_one_task_store_each_step_once_and_bill_every_call(
    redis_url: str,
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/8"
    client = redis.Redis.from_url(url)
    client.flushdb()
    task_id = "t-race"
    TaskState(client, ttl=60).submit(task_id, pattern="fanout", root_message={})
    start = threading.Barrier(WRITERS)
    with ThreadPoolExecutor(WRITERS) as pool:
        writers = [pool.submit(write_every_step, url, task_id, n, start) for n in range(WRITERS)]
    for writer in writers:
        writer.result()

    info = TaskState(client, ttl=60).task_info(task_id)
    paid = INPUTS + int(info.get("duplicates", 0))  # every recorded call was a paid call
    assert client.hlen(keys.board(task_id)) == INPUTS
    assert client.xlen(keys.trace(task_id)) == INPUTS
    assert int(info["steps"]) == INPUTS
    assert int(info["input_tokens"]) == 10 * paid
    assert int(info["output_tokens"]) == 3 * paid
    assert int(info["cost_micro_usd"]) == 5 * paid
    assert int(info.get("duplicate_cost_micro_usd", 0)) == 5 * (paid - INPUTS)
    assert int(info["retries"]) == paid
    assert int(info["running:analyst"]) == 0  # every begin was matched by one record, or none
    kinds = [e[b"kind"] for _, e in client.xrange(keys.AUDIT)]
    assert kinds.count(b"step") == INPUTS
    assert kinds.count(b"duplicate_step") == paid - INPUTS
    assert client.ttl(keys.board(task_id)) > 0


@pytest.fixture
def more_researchers(stack_env: dict[str, str], log_dir: Path) -> Iterator[list[ManagedProcess]]:
    """Two more research worker processes beside the session's one."""
    extra = [start_worker(["research"], stack_env, log_dir, concurrency=4) for _ in range(2)]
    yield extra
    stop_all(extra)


def test_several_worker_processes_writing_one_task_keep_consistent_totals(
    dispatcher: Dispatcher, more_researchers: list[ManagedProcess], redis_url: str
) -> None:
    def research_processes() -> int:
        replies = dispatcher.app.control.ping(timeout=0.5) or []
        return sum(name.startswith("research.") for reply in replies for name in reply)

    wait_until(lambda: research_processes() >= 3, timeout=120, what="three research processes")
    aspects = [(f"angle{n}", f"Look at the shared board from angle {n}.") for n in range(9)]
    handle = dispatcher.submit("Assess the shared board", pattern="fanout", aspects=aspects)
    outcome = handle.wait(90)
    steps = handle.trace()
    board = redis.Redis.from_url(redis_url).hgetall(keys.board(handle.task_id))

    assert len(steps) == len(board) == 10  # nine branches and the merge
    assert len({s.input_message_id for s in steps}) == 10
    assert outcome.cost_micro_usd == sum(s.cost_micro_usd for s in steps)
    assert outcome.input_tokens == sum(s.usage["input_tokens"] for s in steps)
    assert outcome.output_tokens == sum(s.usage["output_tokens"] for s in steps)
    assert int(handle.status()["steps"]) == 10


def test_two_deliveries_of_one_message_at_once_leave_one_answer_and_one_hand_off(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    """A message restored while its first delivery still runs: both call the model, one record
    wins, and the loser answers like a redelivery, so its router hand-off is not returned to
    the producer as the task's answer (workers.tasks replays or drops it)."""
    simulator, url = start_simulator(log_dir, latency=0.3)  # both calls overlap
    try:
        runtime = create_app(Settings.from_env({**stack_env, "ANTHROPIC_BASE_URL": url})).runtime()
        root = AgentMessage.root(recipient="router", payload={"text": "Summarize the race drill"})
        runtime.state.submit(root.task_id, pattern="route", root_message=root.to_dict())
        routing = StepOptions(role="route", targets=list(ROUTER_TARGETS))
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(
                pool.map(
                    lambda _: run_agent(
                        runtime,
                        AGENTS["router"],
                        root.to_dict(),
                        Delivery(),
                        options=routing.model_dump(),
                    ),
                    range(2),
                )
            )
    finally:
        simulator.stop()

    winner, loser = sorted(outcomes, key=lambda outcome: outcome.replayed)
    assert not winner.replayed
    step = continuation_of(winner.input_message_id, winner.message, routing)
    assert step is not None  # the winner delegates to the specialist
    assert step.kind == "delegate"
    assert loser.replayed
    # The loser's hand-off is the winner's, id and all: sent twice, it is still one step.
    assert loser.message == winner.message
    assert (
        len(Dispatcher(create_app(Settings.from_env(stack_env))).handle(root.task_id).trace()) == 1
    )
