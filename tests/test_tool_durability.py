"""A tool loop survives kill -9: the redelivered step resumes from its journal.

Each task's loop has three turns (lookup, lookup, answer). The simulator hangs the second turn
of each task's first delivery (a fault scoped to the task's marker), so the worker is killed
with every loop in its second turn; a new worker takes the redelivered messages. The
simulator's ledger must then show each turn billed once, the tool's own log one run per call,
and the task's totals what the ledger billed.

`make chaos` (CHORUS_CHAOS_FULL=1) runs 20 such loops: 4 kills of a worker holding 5 each.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import Dispatcher
from dispatcher.embedded import (
    ManagedProcess,
    celery_worker_argv,
    node_name,
    start_redis,
    wait_until,
)
from simulator import BackgroundSimulator
from tests.tool_fixtures import control, ledger
from workers import keys
from workers.loading import load_app
from workers.settings import Settings

FULL = os.environ.get("CHORUS_CHAOS_FULL") == "1"
ROUNDS, PER_ROUND = (4, 5) if FULL else (1, 2)
TOOL_LOG = "CHORUS_TEST_TOOL_LOG"


class Stack:
    """A Redis and a simulator of the module's own, and scout workers of tests.tool_team."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.workers: list[ManagedProcess] = []
        app = load_app("tests.tool_team").using(Settings.from_env(env))
        self.dispatcher = Dispatcher(app)

    def start_worker(self) -> ManagedProcess:
        argv = celery_worker_argv("workers.app", "agent.scout", node_name(["scout"]), 8)
        worker = ManagedProcess(f"scout-{len(self.workers)}", argv, self.env, self.log_dir)
        self.workers.append(worker)

        def consuming() -> bool:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} died:\n{worker.log_tail()}")
            replies = self.dispatcher.app.control.inspect(timeout=0.5).active_queues() or {}
            return any(node.startswith("scout.") for node in replies)

        wait_until(consuming, timeout=90, what="a scout worker")
        return worker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("tool-durability")
    server, url = start_redis(data)
    simulator = BackgroundSimulator().start()
    env = {
        **stack_env,
        "CHORUS_APP": "tests.tool_team",
        "CHORUS_REDIS_URL": url,
        "ANTHROPIC_BASE_URL": simulator.url,
        "CHORUS_AUDIT": "0",
        "CHORUS_VISIBILITY_TIMEOUT": "10",
        "CHORUS_TRANSIT_CHECK_SECONDS": "5",
        TOOL_LOG: str(data / "lookup.log"),
    }
    running = Stack(env, data)
    try:
        yield running
    finally:
        for worker in running.workers:
            worker.stop()
        simulator.stop()
        server.stop()


def script(url: str, marker: str) -> None:
    turns = [
        {"tool_calls": [{"name": "lookup", "input": {"topic": f"{marker}-a"}}]},
        {"tool_calls": [{"name": "lookup", "input": {"topic": f"{marker}-b"}}]},
        {"tool_input": {"answer": f"found {marker}", "sources": ["notes"]}},
    ]
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": turns})
    # The first delivery's second turn hangs: the worker is killed while it waits.
    control(url, "/_sim/faults", "POST", {"match": marker, "schedule": ["ok", "hang"]})


def hung(url: str, markers: list[str]) -> bool:
    scoped = {p["match"]: p for p in control(url, "/_sim/faults")["scoped"]}
    return all(scoped[m]["injected"].get("hang", 0) == 1 for m in markers)


def test_kill_9_in_the_second_turn_pays_no_turn_twice_and_runs_no_tool_twice(
    stack: Stack,
) -> None:
    url = stack.env["ANTHROPIC_BASE_URL"]
    log = Path(stack.env[TOOL_LOG])
    report: dict[str, Any] = {"loops": 0, "turns paid twice": 0, "tools run twice": 0}
    worker = stack.start_worker()
    for _round in range(ROUNDS):
        markers = [f"loop-{uuid.uuid4().hex[:10]}" for _ in range(PER_ROUND)]
        for marker in markers:
            script(url, marker)
        handles = [
            stack.dispatcher.submit(f"Look up {marker} twice", agent="scout") for marker in markers
        ]
        wait_until(
            lambda markers=markers: hung(url, markers),  # type: ignore[misc]
            timeout=60,
            what="every loop in its second turn",
        )

        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(10)
        worker = stack.start_worker()

        for handle, marker in zip(handles, markers, strict=True):
            outcome = handle.wait(120)
            assert outcome.ok, outcome.result
            assert outcome.result["answer"] == f"found {marker}"
            billed = ledger(url, handle.task_id)
            assert len(billed["calls"]) == 3  # turns 1, 2 and 3, each once (the hang billed none)
            report["turns paid twice"] += len(billed["calls"]) - 3
            assert outcome.input_tokens == billed["totals"]["input_tokens"]
            assert outcome.output_tokens == billed["totals"]["output_tokens"]
            runs = [line.split()[2] for line in log.read_text().splitlines() if marker in line]
            assert runs == [f"{marker}-a", f"{marker}-b"]  # each call ran once
            report["tools run twice"] += len(runs) - len(set(runs))
            (step,) = handle.trace()
            assert [t["replayed"] for t in step.turns] == [True, False, False]
            assert [c["replayed"] for c in step.tool_calls] == [True, False]
            journal = stack.dispatcher.state.redis.exists(
                keys.journal(handle.task_id, step.input_message_id)
            )
            assert journal  # kept until the task's state expires, for debugging
            report["loops"] += 1
    print(f"\ntool loop kill -9: {report}")
    assert report == {"loops": ROUNDS * PER_ROUND, "turns paid twice": 0, "tools run twice": 0}
