"""Chaos: real processes killed and restarted under load. Every task ends, none is lost, none is
counted twice. `make chaos` runs it at full size (CHORUS_CHAOS_TASKS=200) and prints the figures;
`make test` runs the same tests smaller."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.dispatcher import FINISHED, TaskHandle
from dispatcher.embedded import (
    ManagedProcess,
    start_redis,
    start_simulator,
    start_worker,
    wait_until,
)
from messages import ChorusError
from tests.conftest import TEST_API_KEY
from workers import keys
from workers.app import create_app
from workers.registry import AGENTS, ROUTER_TARGETS
from workers.settings import Settings

TASKS = int(os.environ.get("CHORUS_CHAOS_TASKS", "40"))
ROUTE_AGENTS = ["router", *ROUTER_TARGETS]


@dataclass
class ChaosFleet:
    env: dict[str, str]
    log_dir: Path
    redis: ManagedProcess
    redis_port: int
    workers: dict[str, list[ManagedProcess]] = field(default_factory=dict)

    @property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(create_app(Settings.from_env(self.env)))

    def start(self, agent: str) -> ManagedProcess:
        worker = start_worker([agent], self.env, self.log_dir, concurrency=16)
        self.workers.setdefault(agent, []).append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(
            w.log_path.read_text(errors="replace") for ws in self.workers.values() for w in ws
        )

    def put_back(self) -> int:
        """Messages the transit reaper found lost between BRPOP and `unacked` and put back."""
        return self.logs().count("lost between the broker and a worker")

    def stop(self) -> None:
        for workers in self.workers.values():
            for worker in workers:
                worker.stop()
        self.redis.stop()


@pytest.fixture
def chaos_fleet(tmp_path: Path, stack_env: dict[str, str], log_dir: Path) -> Iterator[ChaosFleet]:
    """Own Redis (append-only, so it can restart), slow simulator, one worker per route agent,
    a 10 s visibility timeout so a dead worker's messages come back within seconds (and a 5 s
    transit check for the ones lost in kombu's BRPOP window), and a 3 s call timeout so a hung
    call costs seconds."""
    data = tmp_path / "redis"
    data.mkdir()
    server, url = start_redis(data, appendonly=True)
    simulator, sim_url = start_simulator(log_dir, latency=0.3)
    env = {
        **stack_env,
        "CHORUS_REDIS_URL": url,
        "ANTHROPIC_BASE_URL": sim_url,
        "CHORUS_VISIBILITY_TIMEOUT": "10",
        "CHORUS_CALL_TIMEOUT": "3",
        "CHORUS_AUDIT": "0",
        "CHORUS_TRANSIT_CHECK_SECONDS": "5",
    }
    fleet = ChaosFleet(env, log_dir, server, int(url.rsplit(":", 1)[1].split("/")[0]))
    for agent in ROUTE_AGENTS:
        fleet.start(agent)
    dispatcher = fleet.dispatcher
    wanted = {AGENTS[a].queue for a in ROUTE_AGENTS}
    wait_until(lambda: wanted <= dispatcher.consumed_queues(0.5), timeout=60, what="chaos fleet")
    yield fleet
    fleet.stop()
    simulator.stop()


def submit_all(dispatcher: Dispatcher, count: int, prefix: str) -> list[TaskHandle]:
    return [
        dispatcher.submit(f"{prefix} request {n}: summarize the incident") for n in range(count)
    ]


def check_nothing_lost_or_doubled(handles: list[TaskHandle], client: redis.Redis) -> dict[str, int]:
    """Every task terminal; one blackboard entry and one charge per handled input message."""
    lost = doubled = 0
    for handle in handles:
        info = handle.status()
        if info.get("status") not in FINISHED:
            lost += 1
            continue
        steps = handle.trace()
        inputs = [s.input_message_id for s in steps]
        board = client.hlen(keys.board(handle.task_id))
        if len(set(inputs)) != len(inputs) or board != len(inputs):
            doubled += 1
        if int(info["cost_micro_usd"]) != sum(s.cost_micro_usd for s in steps):
            doubled += 1
        if int(info["steps"]) != len(steps):
            doubled += 1
    return {"lost": lost, "doubled": doubled}


def test_kill_9_of_a_worker_of_each_agent_type_loses_nothing(
    chaos_fleet: ChaosFleet, chaos_report: dict[str, Any]
) -> None:
    dispatcher = chaos_fleet.dispatcher
    handles = submit_all(dispatcher, TASKS, "crash")
    time.sleep(1.0)  # let every queue have work in flight
    killed = 0
    for agent in ROUTE_AGENTS:
        victim = chaos_fleet.workers[agent][0]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        killed += 1
        chaos_fleet.start(agent)  # the supervisor (compose, k8s, systemd) restarts it

    outcomes = []
    with ThreadPoolExecutor(len(handles)) as pool:
        outcomes = list(pool.map(lambda h: h.wait(180), handles))
    client = redis.Redis.from_url(chaos_fleet.env["CHORUS_REDIS_URL"])
    figures = check_nothing_lost_or_doubled(handles, client)

    chaos_report["worker kill -9"] = {
        "tasks": len(handles),
        "faults": f"{killed} workers killed with SIGKILL",
        "done": sum(o.status == "done" for o in outcomes),
        "put_back": chaos_fleet.put_back(),
        **figures,
    }
    assert figures == {"lost": 0, "doubled": 0}
    assert {o.status for o in outcomes} <= {"done", "failed"}


def test_a_redis_restart_mid_run_ends_every_task_or_says_so(
    chaos_fleet: ChaosFleet, chaos_report: dict[str, Any]
) -> None:
    dispatcher = chaos_fleet.dispatcher
    handles = submit_all(dispatcher, TASKS, "restart")
    time.sleep(1.0)
    chaos_fleet.redis.stop()  # SIGTERM: Redis flushes its append-only file and exits
    time.sleep(2.0)
    server, _ = start_redis(
        Path(chaos_fleet.redis.log_path.parent), chaos_fleet.redis_port, appendonly=True
    )
    chaos_fleet.redis = server

    results: dict[str, int] = {"done": 0, "failed": 0, "explicit_timeouts": 0}

    def wait(handle: TaskHandle) -> None:
        try:
            outcome = handle.wait(60)  # recovery takes the 10 s visibility timeout + 5 s
        except ChorusError:  # a clear error (TaskTimeoutError), never a hang
            results["explicit_timeouts"] += 1
            return
        results["done" if outcome.status == "done" else "failed"] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(len(handles)) as pool:
        list(pool.map(wait, handles))
    assert time.monotonic() - started < 90  # every wait returned within its timeout
    client = redis.Redis.from_url(chaos_fleet.env["CHORUS_REDIS_URL"])
    figures = check_nothing_lost_or_doubled(handles, client)

    chaos_report["redis restart"] = {
        "tasks": len(handles),
        "faults": "1 Redis restart (append-only file on)",
        **results,
        "put_back": chaos_fleet.put_back(),
        **figures,
    }
    assert sum(results.values()) == len(handles)
    dead = [w.name for ws in chaos_fleet.workers.values() for w in ws if not w.alive()]
    assert dead == []  # every worker reconnected on its own; none needed a restart
    assert figures == {"lost": 0, "doubled": 0}
    assert results["explicit_timeouts"] == 0


def test_provider_faults_at_high_rates_end_every_task_within_budget_and_caps(
    chaos_fleet: ChaosFleet, chaos_report: dict[str, Any]
) -> None:
    import json
    import urllib.request

    sim_url = chaos_fleet.env["ANTHROPIC_BASE_URL"]
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
    request = urllib.request.Request(
        f"{sim_url}/_sim/faults", data=json.dumps(plan).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=5).close()
    dispatcher = chaos_fleet.dispatcher
    budget = 0.05
    handles = [
        dispatcher.submit(f"faulty request {n}: summarize the outage", budget_usd=budget)
        for n in range(TASKS)
    ]
    with ThreadPoolExecutor(len(handles)) as pool:
        outcomes = list(pool.map(lambda h: h.wait(180), handles))
    settings = Settings.from_env(chaos_fleet.env)
    client = redis.Redis.from_url(chaos_fleet.env["CHORUS_REDIS_URL"])
    figures = check_nothing_lost_or_doubled(handles, client)
    over_budget = sum(o.cost_micro_usd > budget * 1_000_000 for o in outcomes)
    over_cap = sum(o.retries > settings.task_max_retries for o in outcomes)

    chaos_report["provider faults"] = {
        "tasks": len(handles),
        "faults": ", ".join(f"{k} {v:.0%}" for k, v in plan["rates"].items()),  # type: ignore[attr-defined]
        "done": sum(o.status == "done" for o in outcomes),
        "retries": sum(o.retries for o in outcomes),
        **figures,
        "over_budget": over_budget,
    }
    assert figures == {"lost": 0, "doubled": 0}
    assert over_budget == 0
    assert over_cap == 0


def test_no_api_key_in_worker_logs_redis_or_error_text(chaos_fleet: ChaosFleet) -> None:
    handle = chaos_fleet.dispatcher.submit("Summarize the secrets policy")
    handle.wait(60)
    assert TEST_API_KEY not in chaos_fleet.logs()
    client = redis.Redis.from_url(chaos_fleet.env["CHORUS_REDIS_URL"])
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            blob = client.get(key) or b""
        elif kind == b"hash":
            blob = b"".join(k + v for k, v in client.hgetall(key).items())
        elif kind == b"stream":
            blob = b"".join(k + v for _, fields in client.xrange(key) for k, v in fields.items())
        elif kind == b"list":
            blob = b"".join(client.lrange(key, 0, -1))
        else:
            continue
        assert TEST_API_KEY.encode() not in blob, key
