"""Errors a user meets on the command line: one line saying what to do, exit status 2."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, free_port, wait_until
from messages.status import TaskStatus


def chorus(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", ""], "the request text is empty"),
        (["run", "   ", "--embedded"], "the request text is empty"),
        (["run", "x", "--workflow", "nope"], "unknown workflow 'nope'"),
        (["run", "x", "--workflow", "fanout", "--max-rounds", "2"], "do not apply to a fanout"),
        (["run", "x", "--agent", "ghost"], "unknown agent 'ghost'"),
        (["run", "x", "--input", "novalue"], "--input needs KEY=JSON"),
        (["-A", "no_such_team", "run", "x"], "cannot import app module 'no_such_team'"),
    ],
)
def test_a_bad_request_prints_one_line_and_exits_2(
    args: list[str], says: str, stack_env: dict[str, str]
) -> None:
    done = chorus(*args, env=stack_env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]
    assert "Traceback" not in done.stderr


def test_sim_takes_the_simulators_own_options(stack_env: dict[str, str], log_dir: object) -> None:
    from pathlib import Path

    port = free_port()
    sim = ManagedProcess(
        "sim-cli",
        [sys.executable, "-m", "dispatcher.cli", "sim", "--port", str(port), "--latency", "0.5"],
        stack_env,
        Path(str(log_dir)),
    )
    try:

        def up() -> bool:
            if not sim.alive():
                raise RuntimeError(sim.log_tail())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(up, timeout=60, what="chorus sim on its --port")
    finally:
        sim.stop()


def test_priority_applies_to_every_workflow_not_only_routing(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit("Plan the launch", workflow="pipeline", priority="high")
    outcome = handle.wait(90)
    assert outcome.status == TaskStatus.DONE
    assert {step.priority for step in handle.trace()} == {0}
