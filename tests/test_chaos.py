"""Chaos: every pattern under real faults. kill -9 of each agent type's worker (a replacement
started at once) and a Redis restart (append-only file on): every task ends, its result reaches
the producer, and no step or model call counts twice.

`make test` runs CHORUS_CHAOS_TASKS (default 8) tasks per pattern; `make chaos` sets
CHORUS_CHAOS_FULL=1 CHORUS_CHAOS_TASKS=100 and prints one table per fault.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.dispatcher import TaskHandle
from dispatcher.embedded import start_simulator, wait_until
from messages.status import FINISHED, TaskStatus
from tests.books import Row, audit_task, billed, table, unfinished, wait_all, why_unfinished
from tests.conftest import TEST_API_KEY
from tests.stack import Fleet, Held, fleet, held_by_queue, queue_of, quiet, unacked
from workers import keys
from workers.registry import AGENTS
from workers.settings import Settings

TASKS = int(os.environ.get("CHORUS_CHAOS_TASKS", "8"))
FULL = os.environ.get("CHORUS_CHAOS_FULL") == "1"
VISIBILITY = "10"
"""Seconds before Redis gives a dead worker's messages to another (CHORUS_VISIBILITY_TIMEOUT)."""
LATENCY = 0.6
"""Seconds the simulator takes per call: a step holds its message at least this long."""
WAIT = 600.0 if FULL else 150.0
"""The generous bound: a task not ended with its result stored by then is lost."""

PATTERNS: dict[str, dict[str, Any]] = {
    "route": {},
    "pipeline": {},
    "fanout": {},
    "consensus": {},
    "evaluate": {"max_rounds": 2},
    "orchestrate": {"max_subtasks": 3},
}
WORKS_ON: dict[str, tuple[str, ...]] = {
    "route": ("router",),
    "pipeline": ("research", "drafter", "critic"),
    "fanout": ("research", "merger"),
    "consensus": ("analyst", "judge"),
    "evaluate": ("drafter", "critic"),
    "orchestrate": ("orchestrator", "research", "synthesizer"),
}
"""Agents each pattern's steps run on (route's targets vary with the router's answers)."""
AGENT_TYPES = list(AGENTS)

Handles = dict[str, list[TaskHandle]]
Orphans = dict[str, list[Held]]
LOST: list[str] = []
"""Why each lost task counts as lost (its status, counters still up, result), for the report."""
DOUBLED: list[str] = []
"""What each doubled or cut-off task counted twice or missed."""
LEAKED: list[str] = []
"""Tasks that ended with a step still counted in flight (their counters)."""

pytestmark = pytest.mark.timeout(3600 if FULL else 900)


@pytest.fixture(scope="module")
def chaos_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator of the module's own, slow enough that every step is in flight a while."""
    process, url = start_simulator(tmp_path_factory.mktemp("chaos-sim"), latency=LATENCY)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def chaos_fleet(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], chaos_simulator: str
) -> Iterator[Fleet]:
    """One worker process per agent type on a Redis of its own; a 10 s visibility timeout and a
    5 s transit check bring a dead worker's messages back within seconds, and a 3 s call
    timeout bounds a hung call."""
    env = {**stack_env, "ANTHROPIC_BASE_URL": chaos_simulator}
    with fleet(
        env,
        tmp_path_factory.mktemp("chaos"),
        AGENT_TYPES,
        visibility_timeout=VISIBILITY,
        call_timeout="3",
        transit_check_seconds="5",
    ) as running:
        yield running


def submit_all(dispatcher: Dispatcher, label: str, handles: Handles | None = None) -> Handles:
    """TASKS of each pattern, interleaved, so every pattern is in flight at once (into
    `handles` as they go, when given)."""
    handles = {pattern: [] for pattern in PATTERNS} if handles is None else handles
    for n in range(TASKS):
        for pattern, options in PATTERNS.items():
            text = f"{label} {pattern} request {n}: the incident"
            handles[pattern].append(dispatcher.submit(text, pattern=pattern, **options))
    return handles


def ids(handles: Handles) -> list[str]:
    return [h.task_id for hs in handles.values() for h in hs]


def settle(chaos_fleet: Fleet, handles: Handles, sim_url: str) -> dict[str, Row]:
    """Wait for every task (up to WAIT), then for the fleet to go quiet; one row per pattern."""
    app = chaos_fleet.dispatcher().app
    client = chaos_fleet.client()
    for notes in (LOST, DOUBLED, LEAKED):
        notes.clear()
    lost = set(wait_all(app, client, ids(handles), WAIT))
    LOST.extend(why_unfinished(app, client, task_id) for task_id in sorted(lost))
    queues = [queue_of(a) for a in AGENT_TYPES]
    wait_until(lambda: quiet(client, queues), timeout=60, what="queues and unacked to drain")
    bill = billed(sim_url)
    rows: dict[str, Row] = {}
    for pattern, pattern_handles in handles.items():
        row = rows[pattern] = Row()
        for handle in pattern_handles:
            if handle.task_id in lost:
                row.tasks += 1
                row.lost += 1
                continue
            one = audit_task(handle, client, bill.get(handle.task_id), DOUBLED)
            if one.leaked:
                LEAKED.append(why_unfinished(app, client, handle.task_id))
            row.add(one)
    return rows


def kill_each_in_flight(chaos_fleet: Fleet, handles: Handles, submitting: Future[Any]) -> Orphans:
    """kill -9 each agent type's worker the moment it holds messages, and start a replacement
    at once; from the first submission on, while the rest are still being submitted. Returns,
    per agent, what the dead worker held: delivered and unacknowledged, so only a redelivery
    can finish it. An agent whose work was all over before its worker could be caught busy is
    killed idle at the end (an empty list)."""
    client = chaos_fleet.client()
    app = chaos_fleet.dispatcher().app
    orphans: dict[str, list[Held]] = {}
    deadline = time.monotonic() + WAIT
    for poll in itertools.count():
        if len(orphans) == len(AGENT_TYPES) or time.monotonic() > deadline:
            break
        held = held_by_queue(client)
        for agent in AGENT_TYPES:
            if agent not in orphans and held.get(queue_of(agent)):
                chaos_fleet.kill(agent)
                orphans[agent] = held_by_queue(client).get(queue_of(agent), [])
                chaos_fleet.start(agent)  # the supervisor (compose, k8s, systemd) restarts it
        if poll % 20 == 19 and submitting.done() and not unfinished(app, client, ids(handles)):
            break
        time.sleep(0.05)  # polling interval
    for agent in AGENT_TYPES:
        if agent not in orphans:
            chaos_fleet.kill(agent)
            orphans[agent] = []
            chaos_fleet.start(agent)
    return orphans


def test_kill_9_of_each_agent_types_worker_loses_nothing_in_any_pattern(
    chaos_fleet: Fleet, chaos_simulator: str, chaos_tables: list[list[str]]
) -> None:
    started = time.monotonic()
    replays_before = chaos_fleet.replays()
    handles: Handles = {pattern: [] for pattern in PATTERNS}
    with ThreadPoolExecutor(1) as pool:
        submitting = pool.submit(submit_all, chaos_fleet.dispatcher(), "crash", handles)
        orphans = kill_each_in_flight(chaos_fleet, handles, submitting)
        submitting.result()
    rows = settle(chaos_fleet, handles, chaos_simulator)
    chaos_fleet.wait_consuming(AGENT_TYPES)  # every replacement came up

    busy = sorted(agent for agent, held in orphans.items() if held)
    redelivered = sum(len(held) for held in orphans.values())
    still_held = {h.tag for h in unacked(chaos_fleet.client())}
    cut_off = sum(row.cut_off for row in rows.values())
    paid_twice = sum(row.paid_twice for row in rows.values())
    chaos_tables.append(
        table(
            f"kill -9 of each agent type's worker ({TASKS} tasks per pattern, "
            f"{time.monotonic() - started:.0f} s)",
            rows,
            [
                f"killed busy: {', '.join(f'{a} ({len(orphans[a])})' for a in busy)}",
                f"killed idle: {', '.join(a for a in AGENT_TYPES if a not in busy) or 'none'}",
                f"messages a dead worker held, redelivered: {redelivered}; "
                f"of those already recorded (replayed): {chaos_fleet.replays() - replays_before}; "
                f"lost between BRPOP and unacked, put back: {chaos_fleet.put_back()}",
                *sorted(DOUBLED)[:10],
            ],
        )
    )
    assert all(row.lost == 0 for row in rows.values()), LOST[:5]
    assert all(row.doubled == 0 for row in rows.values()), sorted(DOUBLED)[:5]
    # Messages really were in flight: every pattern had a worker it runs on die holding some.
    assert redelivered > 0
    for pattern, agents in WORKS_ON.items():
        assert set(agents) & set(busy), f"no worker of {pattern} was killed busy: {busy}"
    # ... and redelivered: a dead worker acknowledges nothing, yet none of its messages is
    # still unacknowledged, and every task ended.
    assert not {h.tag for held in orphans.values() for h in held} & still_held
    # A call answered to a worker that died before recording it is billed once, on no task;
    # at most one per message the dead workers held.
    assert cut_off <= redelivered
    # Two copies of one message running at once both pay: only a redelivered message can.
    assert paid_twice <= redelivered
    assert all(row.leaked == 0 for row in rows.values()), LEAKED[:5]


def wait_every_pattern_running(chaos_fleet: Fleet, handles: Handles) -> dict[str, int]:
    """Until each pattern has a task that started and has not ended, at the same moment;
    returns how many of each pattern's tasks are in progress then."""
    client = chaos_fleet.client()
    in_progress: dict[str, int] = {}

    def every_pattern_running() -> bool:
        with client.pipeline(transaction=False) as pipe:
            for handle in (h for hs in handles.values() for h in hs):
                pipe.hget(keys.task(handle.task_id), "status")
            statuses = iter(pipe.execute())
        for pattern, pattern_handles in handles.items():
            running = [next(statuses) == TaskStatus.RUNNING.encode() for _ in pattern_handles]
            in_progress[pattern] = sum(running)
        return all(in_progress.values())

    wait_until(every_pattern_running, timeout=60, what="a task of every pattern to be running")
    return in_progress


def test_a_redis_restart_mid_run_loses_nothing_in_any_pattern(
    chaos_fleet: Fleet, chaos_simulator: str, chaos_tables: list[list[str]]
) -> None:
    started = time.monotonic()
    handles = submit_all(chaos_fleet.dispatcher(), "restart")
    replays_before = chaos_fleet.replays()
    running = wait_every_pattern_running(chaos_fleet, handles)
    in_flight = unacked(chaos_fleet.client())
    chaos_fleet.restart_redis()
    rows = settle(chaos_fleet, handles, chaos_simulator)

    chaos_tables.append(
        table(
            f"Redis restart, append-only file on ({TASKS} tasks per pattern, "
            f"{time.monotonic() - started:.0f} s)",
            rows,
            [
                "tasks running at the restart: "
                + ", ".join(f"{pattern} {count}" for pattern, count in running.items()),
                f"messages delivered and unacknowledged at the restart: {len(in_flight)}; "
                f"redeliveries of recorded steps (replayed): "
                f"{chaos_fleet.replays() - replays_before}; "
                f"put back from the transit ledger: {chaos_fleet.put_back()}",
                *sorted(DOUBLED)[:10],
            ],
        )
    )
    dead = [w.name for ws in chaos_fleet.workers.values() for w in ws[-1:] if not w.alive()]
    assert dead == []  # every worker reconnected on its own; none needed a restart
    assert in_flight  # the restart hit messages in flight
    assert all(row.lost == 0 for row in rows.values()), LOST[:5]
    assert all(row.doubled == 0 for row in rows.values()), sorted(DOUBLED)[:5]
    assert all(row.cut_off == 0 for row in rows.values()), rows  # nobody died holding an answer
    assert all(row.leaked == 0 for row in rows.values()), LEAKED[:5]


def test_provider_faults_at_high_rates_end_every_task_within_budget_and_caps(
    chaos_fleet: Fleet, chaos_simulator: str, chaos_report: dict[str, Any]
) -> None:
    plan = {
        "rates": {
            "rate_limit": 0.15,
            "overloaded": 0.1,
            "server_error": 0.1,
            "prose": 0.1,
            "truncate": 0.05,
            "hang": 0.05,
        },
        "retry_after": 0.05,
        "hang_seconds": 30,  # far beyond the fleet's 3 s call timeout
        "seed": 11,
    }
    _set_faults(chaos_simulator, plan)
    try:
        dispatcher = chaos_fleet.dispatcher()
        budget = 0.05
        handles = [
            dispatcher.submit(f"faulty request {n}: summarize the outage", budget_usd=budget)
            for n in range(TASKS)
        ]
        rows = settle(chaos_fleet, {"route": handles}, chaos_simulator)
    finally:
        _set_faults(chaos_simulator, {"rates": {}, "schedule": []})
    settings = Settings.from_env(chaos_fleet.env)
    outcomes = [h.wait(10) for h in handles]
    over_budget = sum(o.cost_micro_usd > budget * 1_000_000 for o in outcomes)
    over_cap = sum(o.retries > settings.task_max_retries for o in outcomes)
    row = rows["route"]
    chaos_report["provider faults"] = {
        "tasks": len(handles),
        "faults": ", ".join(f"{k} {v:.0%}" for k, v in plan["rates"].items()),  # type: ignore[attr-defined]
        "done": row.done,
        "retries": sum(o.retries for o in outcomes),
        "lost": row.lost,
        "doubled": row.doubled,
        "over_budget": over_budget,
    }
    assert (row.lost, row.doubled, row.cut_off) == (0, 0, 0)
    assert over_budget == 0
    assert over_cap == 0


def _set_faults(sim_url: str, plan: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{sim_url}/_sim/faults", data=json.dumps(plan).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=5).close()


def test_no_api_key_in_worker_logs_redis_or_error_text(chaos_fleet: Fleet) -> None:
    handle = chaos_fleet.dispatcher().submit("Summarize the secrets policy")
    assert handle.wait(60).status in FINISHED
    assert TEST_API_KEY not in chaos_fleet.logs()
    client = chaos_fleet.client()
    for key in client.scan_iter(count=1000):
        assert TEST_API_KEY.encode() not in _blob(client, key), key


def _blob(client: redis.Redis, key: bytes) -> bytes:
    """Every byte a key holds (strings, hashes, streams, lists)."""
    kind = client.type(key)
    parts: list[Any] = []
    if kind == b"string":
        parts = [client.get(key) or b""]
    elif kind == b"hash":
        parts = [x for kv in cast(dict[bytes, bytes], client.hgetall(key)).items() for x in kv]
    elif kind == b"stream":
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key))
        parts = [x for _, fields in entries for kv in fields.items() for x in kv]
    elif kind == b"list":
        parts = cast(list[bytes], client.lrange(key, 0, -1))
    return b"".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
