"""Redis Sentinel failover under load (the URLs and clients: tests/test_redis_urls.py).

The test starts a primary, one replica and three Sentinels (plain redis-server
processes), real workers and the simulator, kills the primary with SIGKILL while tasks are in
flight, and reports what every task became. `make test` runs it with 20 tasks; with
CHORUS_CHAOS_FULL=1 it runs CHORUS_CHAOS_TASKS tasks, once without WAIT and once with
CHORUS_REDIS_WAIT_REPLICAS=1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.dispatcher import FINISHED, TaskHandle
from dispatcher.embedded import (
    ManagedProcess,
    start_simulator,
    start_worker,
    stop_all,
    wait_until,
)
from messages import ChorusError
from tests.conftest import sim_request
from tests.sentinel_group import SentinelGroup, start_sentinel_group
from workers import keys, replicas
from workers.app import create_app
from workers.registry import AGENTS
from workers.replicas import ReplicatedRedis
from workers.runtime import state_client
from workers.settings import Settings
from workers.transit import UNACKED

FULL = os.environ.get("CHORUS_CHAOS_FULL") == "1"
TASKS = int(os.environ.get("CHORUS_CHAOS_TASKS", "200")) if FULL else 20
WAITS = (0, 1) if FULL else (0,)
"""CHORUS_REDIS_WAIT_REPLICAS settings the failover runs with."""


# -- the failover -----------------------------------------------------------------------------


@dataclass
class Failover:
    group: SentinelGroup
    env: dict[str, str]
    workers: list[ManagedProcess]

    def logs(self) -> str:
        return "\n".join(w.log_path.read_text(errors="replace") for w in self.workers)

    def stacks(self) -> str:
        """Every live worker's threads, as Celery prints them on SIGUSR1, for a stalled run."""
        live = [w for w in self.workers if w.alive()]
        before = {w.name: w.log_path.stat().st_size for w in live}
        for worker in live:
            worker.process.send_signal(signal.SIGUSR1)

        def since(worker: ManagedProcess) -> str:
            return worker.log_path.read_bytes()[before[worker.name] :].decode(errors="replace")

        with contextlib.suppress(RuntimeError):  # show what there is
            wait_until(
                lambda: all("MainThread" in since(w) for w in live),
                timeout=10,
                what="the workers' stack dumps",
            )
        return "\n".join(f"--- {w.name}\n{since(w)}" for w in live)

    def broker(self, client: redis.Redis, handles: list[TaskHandle]) -> str:
        """Where a stalled run's work is: the queues, the unacked and transit ledgers, who is
        connected and blocked, and each unfinished task's counters."""
        queues = {spec.queue: client.llen(spec.queue) for spec in AGENTS.values()}
        clients = [c for c in client.client_list() if c.get("name") != "sentinel"]
        statuses = [h.status() for h in handles]
        unfinished = [s for s in statuses if s.get("status") not in FINISHED]
        return (
            f"queues {queues}; unacked {client.hlen(UNACKED)}; transit "
            f"{client.hlen(keys.TRANSIT)}; clients "
            f"{sorted((c.get('addr'), c.get('cmd')) for c in clients)};\n"
            f"unfinished {unfinished}"
        )


@pytest.fixture
def failover(
    request: pytest.FixtureRequest, tmp_path: Path, stack_env: dict[str, str], log_dir: Path
) -> Iterator[Failover]:
    """The group, a slow simulator (tasks stay in flight) and two workers on every queue, with
    the chaos suite's short visibility timeout and transit check."""
    group = start_sentinel_group(tmp_path)
    simulator, sim_url = start_simulator(log_dir, latency=0.3)
    env = {
        **stack_env,
        "CHORUS_REDIS_URL": group.url,
        "CHORUS_SENTINEL_MASTER": group.master,
        "CHORUS_REDIS_WAIT_REPLICAS": str(request.param),
        "ANTHROPIC_BASE_URL": sim_url,
        "CHORUS_VISIBILITY_TIMEOUT": "10",
        "CHORUS_CALL_TIMEOUT": "3",
        "CHORUS_AUDIT": "0",
        "CHORUS_TRANSIT_CHECK_SECONDS": "5",
    }
    # Fewer slots than tasks, so tasks run in waves and finish apart: with a slot for every
    # task they all end in one burst of a few ms, and the kill could come after the last.
    workers = [start_worker(list(AGENTS), env, log_dir, concurrency=4) for _ in range(2)]
    try:
        yield Failover(group, env, workers)
    finally:
        stop_all(workers)
        simulator.stop()
        group.stop()


def finished(handles: list[TaskHandle]) -> int:
    return sum(h.status().get("status") in FINISHED for h in handles)


def wait_calls(port: int) -> int:
    stats = redis.Redis(port=port).info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def script_latency_us(group: SentinelGroup, wait: int, calls: int = 300) -> float:
    """Mean microseconds of one small write script through the state client (with `wait` 1,
    each followed by a WAIT the replica answers)."""
    client = state_client(group.url, 5.0, sentinel_master=group.master, wait_replicas=wait)
    assert isinstance(client, ReplicatedRedis)
    short = replicas.SHORT_WAITS.count
    sha = str(client.script_load("return redis.call('INCR', KEYS[1])"))
    client.evalsha(sha, 1, "latency-probe")
    started = time.perf_counter()
    for _ in range(calls):
        client.evalsha(sha, 1, "latency-probe")
    elapsed = time.perf_counter() - started
    client.close()
    assert replicas.SHORT_WAITS.count == short  # every WAIT was answered in time
    return elapsed / calls * 1e6


USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def billed(simulator_url: str) -> dict[str, dict[str, int]]:
    """What the simulator billed, by task (calls carry the task id as metadata.user_id)."""
    by_task: dict[str, dict[str, int]] = {}
    for call in sim_request(f"{simulator_url}/_sim/ledger")["calls"]:
        row = by_task.setdefault(str(call["user_id"]), dict.fromkeys(("calls", *USAGE), 0))
        row["calls"] += 1
        for name in USAGE:
            row[name] += int(call["usage"].get(name, 0))
    return by_task


@dataclass
class Books:
    """What one task became, and how its model calls were accounted for."""

    became: str
    """done, failed (any other end), lost (no end) or doubled (see `doubling`)."""
    duplicates: int = 0
    """Calls of a message two deliveries both made: billed and counted on the task."""
    unrecorded: int = 0
    """Calls billed but on no step and no duplicate: their record went with the primary."""
    why: str = ""


def books(handle: TaskHandle, client: redis.Redis, bill: dict[str, int]) -> Books:
    info = handle.status()
    if info.get("status") not in FINISHED:
        return Books("lost")
    steps = handle.trace()
    duplicates = int(info.get("duplicates", 0))
    unrecorded = bill.get("calls", 0) - sum(s.attempts for s in steps) - duplicates
    why = doubling(handle, info, steps, client, bill)
    if why:
        return Books("doubled", duplicates, unrecorded, why)
    return Books("done" if info["status"] == "done" else "failed", duplicates, unrecorded)


def doubling(
    handle: TaskHandle,
    info: dict[str, Any],
    steps: list[Any],
    client: redis.Redis,
    bill: dict[str, int],
) -> str:
    """What counts twice (empty if nothing): a step (board, trace and the `steps` total
    agree on one record per input message), the totals (the steps' cost plus what duplicates
    cost), or tokens the provider never billed."""
    inputs = [s.input_message_id for s in steps]
    board = client.hlen(keys.board(handle.task_id))
    spent = sum(s.cost_micro_usd for s in steps) + int(info.get("duplicate_cost_micro_usd", 0))
    problems = []
    if not len(set(inputs)) == len(inputs) == board == int(info.get("steps", 0)):
        problems.append(f"{len(inputs)} steps, {board} on the board, counter {info.get('steps')}")
    if int(info.get("cost_micro_usd", 0)) != spent:
        problems.append(f"cost {info.get('cost_micro_usd')} but steps and duplicates {spent}")
    over = [name for name in USAGE if int(info.get(name, 0)) > bill.get(name, 0)]
    if over:
        problems.append(f"more {', '.join(over)} than billed")
    return "; ".join(problems)


def settled(client: redis.Redis) -> bool:
    """No message unacknowledged, none on the transit ledger, no agent queue holding work."""
    queues = [spec.queue for spec in AGENTS.values()]
    return not (client.hlen(UNACKED) or client.hlen(keys.TRANSIT) or any(map(client.llen, queues)))


def answer(handle: TaskHandle) -> bool:
    """The producer's own wait returns (the result reached it through the new primary)."""
    try:
        handle.wait(180)
    except ChorusError:
        return False
    return True


COLUMNS = {
    "tasks": "tasks",
    "done": "done",
    "failed": "failed",
    "lost": "lost",
    "doubled": "doubled",
    "in_flight_at_kill": "in flight",
    "duplicate_calls": "dup calls",
    "unrecorded_calls": "unrecorded",
    "acks_lost": "acks lost",
    "put_back": "put back",
    "promoted_s": "promoted s",
    "first_task_after_s": "1st task s",
    "all_ended_after_s": "all ended s",
    "script_us_wait0": "script us",
    "script_us_wait1": "+WAIT us",
}


def print_table(wait: int, figures: dict[str, Any]) -> None:
    """One row per run under a header: what every task became, and the failover's times."""
    header = ["WAIT", *COLUMNS.values()]
    row = [str(wait), *(str(figures[name]) for name in COLUMNS)]
    widths = [max(len(a), len(b)) for a, b in zip(header, row, strict=True)]
    print(f"\nSentinel failover: kill -9 of the primary mid-run ({figures['tasks']} route tasks)")
    for cells in (header, row):
        print(
            "  " + "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
        )


@pytest.mark.parametrize("failover", WAITS, indirect=True, ids=lambda w: f"wait{w}")
def test_killing_the_primary_mid_run_loses_and_doubles_no_task(
    failover: Failover, chaos_report: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    group, wait = failover.group, int(failover.env["CHORUS_REDIS_WAIT_REPLICAS"])
    dispatcher = Dispatcher(create_app(Settings.from_env(failover.env)))
    wanted = {spec.queue for spec in AGENTS.values()}
    wait_until(lambda: wanted <= dispatcher.consumed_queues(0.5), timeout=120, what="workers")
    latency = {n: script_latency_us(group, n) for n in (0, 1)}
    waits_before = wait_calls(group.primary_port)

    started = time.monotonic()
    handles = [
        dispatcher.submit(f"failover request {n}: summarize the incident", pattern="route")
        for n in range(TASKS)
    ]
    wait_until(lambda: finished(handles) >= TASKS // 4, timeout=120, what="a quarter done")
    waits_sent = wait_calls(group.primary_port) - waits_before
    done_at_kill = finished(handles)
    assert done_at_kill < TASKS, "every task ended before the kill: nothing was in flight"
    old = group.kill_primary()
    killed = time.monotonic()
    new = group.wait_promoted(old)
    promoted = time.monotonic() - killed
    try:
        wait_until(lambda: finished(handles) > done_at_kill, timeout=120, what="a task after kill")
    except RuntimeError as stalled:
        client = redis.Redis(host=new[0], port=new[1], socket_timeout=2)
        state = failover.broker(client, handles)
        pytest.fail(f"{stalled}; broker: {state}\nthe workers' threads:\n{failover.stacks()}")
    resumed = time.monotonic() - killed
    with ThreadPoolExecutor(len(handles)) as pool:
        answered = sum(pool.map(answer, handles))
    ended = time.monotonic() - killed

    client = redis.Redis(host=new[0], port=new[1])
    # Messages whose ack the failover lost come back after the visibility timeout; their
    # replays must change nothing, so count only once the broker has settled.
    wait_until(lambda: settled(client), timeout=120, what="redeliveries to settle")
    ledger = billed(failover.env["ANTHROPIC_BASE_URL"])
    accounts = [books(h, client, ledger.get(h.task_id, {})) for h in handles]
    outcomes = [a.became for a in accounts]
    counts = {name: outcomes.count(name) for name in ("done", "failed", "lost", "doubled")}
    doubled = [f"{h.task_id}: {a.why}" for h, a in zip(handles, accounts, strict=True) if a.why]
    figures = {
        "tasks": TASKS,
        **counts,
        "in_flight_at_kill": TASKS - done_at_kill,
        "answered": answered,
        "duplicate_calls": sum(a.duplicates for a in accounts),
        "unrecorded_calls": sum(a.unrecorded for a in accounts),
        "acks_lost": failover.logs().count("Couldn't ack"),
        "put_back": failover.logs().count("lost between the broker and a worker"),
        "promoted_s": round(promoted, 2),
        "first_task_after_s": round(resumed, 2),
        "all_ended_after_s": round(ended, 2),
        "run_s": round(time.monotonic() - started, 2),
        "script_us_wait0": round(latency[0]),
        "script_us_wait1": round(latency[1]),
    }
    chaos_report[f"sentinel failover (WAIT {wait})"] = figures
    with capsys.disabled():
        print_table(wait, figures)

    assert new != old
    assert (waits_sent > 0) == (wait > 0)  # the setting reached the workers' state and publishes
    assert (counts["lost"], counts["doubled"]) == (0, 0), (figures, doubled[:5])
    # A message is put back only if the failover lost it between BRPOP and `unacked`: at most
    # once per message then in flight (a storm means receipts stopped clearing the ledger).
    assert figures["put_back"] <= TASKS - done_at_kill
    # Calls the failover made twice (a delivery the replica had not seen handed out again) or
    # billed without their record: each at most once per message then in flight.
    assert figures["duplicate_calls"] <= TASKS - done_at_kill
    assert 0 <= figures["unrecorded_calls"] <= TASKS - done_at_kill
    assert answered == TASKS
    assert [w.name for w in failover.workers if not w.alive()] == []
