"""A fleet for the batch tests: a private Redis, a simulator with a short batch delay, and worker
processes (each consuming every queue the seed's pipeline and consensus use, each running a
batcher that may lead). Every wait is on state, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import redis

from dispatcher import Dispatcher
from dispatcher.embedded import (
    ManagedProcess,
    start_redis,
    start_simulator,
    start_worker,
    stop_all,
    wait_until,
)
from tests.conftest import TEST_API_KEY
from workers import keys
from workers.app import create_app
from workers.models import DEFAULT_PRICES, Usage, cost_micro_usd
from workers.settings import Settings

AGENTS = ("research", "drafter", "critic", "analyst", "judge")
"""The seed's pipeline (research, drafter, critic) and consensus (analyst, judge) agents."""

BATCH_ENV = {
    "CHORUS_BATCH_POLL_SECONDS": "0.1",
    "CHORUS_BATCH_MAX_AGE_SECONDS": "0.2",
    "CHORUS_BATCH_LOCK_SECONDS": "2",
    "CHORUS_TRANSIT_CHECK_SECONDS": "3",
}


def billed_micro_usd(report: dict[str, Any]) -> int:
    """What the simulator's ledger billed, each call at its own price (batched: half)."""
    total = 0
    for call in report["calls"]:
        price = DEFAULT_PRICES[call["model"]]
        total += cost_micro_usd(Usage(**call["usage"]), price.batch() if call["batch"] else price)
    return total


@dataclass
class BatchFleet:
    env: dict[str, str]
    log_dir: Path
    sim_url: str
    processes: list[ManagedProcess] = field(default_factory=list)
    workers: list[ManagedProcess] = field(default_factory=list)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["CHORUS_REDIS_URL"])

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(create_app(Settings.from_env(self.env)))

    def start_worker(self, concurrency: int = 8) -> ManagedProcess:
        worker = start_worker(list(AGENTS), self.env, self.log_dir, concurrency=concurrency)
        self.workers.append(worker)
        return worker

    def wait_consuming(self, dispatcher: Dispatcher, count: int) -> None:
        wanted = {f"agent.{name}" for name in AGENTS}

        def ready() -> bool:
            for worker in self.workers:
                if not worker.alive() and worker.process.returncode not in (-9,):
                    raise RuntimeError(f"{worker.name} died:\n{worker.log_tail()}")
            return wanted <= dispatcher.consumed_queues(0.5) and self.live() >= count

        wait_until(ready, timeout=120, what="batch test workers")

    def live(self) -> int:
        return sum(1 for w in self.workers if w.alive())

    def control(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"x-api-key": TEST_API_KEY}  # the /v1 endpoints want a key
        request = urllib.request.Request(
            f"{self.sim_url}{path}", data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def ledger(self, task_id: str | None = None) -> dict[str, Any]:
        query = f"?user_id={quote(task_id)}" if task_id else ""
        report: dict[str, Any] = self.control(f"/_sim/ledger{query}")
        return report

    def batches(self) -> list[dict[str, Any]]:
        """Every batch the simulator holds (its list endpoint, all pages)."""
        found: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.control(f"/v1/messages/batches?limit=1000{after}")
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            after = f"&after_id={page['last_id']}"

    def leader_pid(self) -> int | None:
        token = cast(bytes | None, self.client().get(keys.BATCH_LOCK))
        return int(token.decode().split(":")[1]) if token else None

    def kill_leader(self) -> ManagedProcess | None:
        """kill -9 the worker whose batcher leads; None when none leads."""
        pid = self.leader_pid()
        victim = next((w for w in self.workers if w.alive() and w.process.pid == pid), None)
        if victim is not None:
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.wait(10)
        return victim


@contextmanager
def batch_fleet(
    log_dir: Path,
    *,
    workers: int = 1,
    batch_delay: float = 0.3,
    env: Mapping[str, str] | None = None,
    sim_args: tuple[str, ...] = (),
) -> Iterator[BatchFleet]:
    redis_process, redis_url = start_redis(log_dir)
    sim_process, sim_url = start_simulator(
        log_dir, extra_args=("--batch-delay", str(batch_delay), *sim_args)
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    base.update(
        CHORUS_REDIS_URL=redis_url,
        CHORUS_DATABASE_URL=f"sqlite:///{log_dir / 'batch-audit.sqlite3'}",
        ANTHROPIC_BASE_URL=sim_url,
        ANTHROPIC_API_KEY=TEST_API_KEY,
        HTTPS_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        **BATCH_ENV,
        **(env or {}),
    )
    fleet = BatchFleet(base, log_dir, sim_url, [redis_process, sim_process])
    try:
        for _ in range(workers):
            fleet.start_worker()
        fleet.wait_consuming(fleet.dispatcher(), workers)
        yield fleet
    finally:
        stop_all(fleet.workers)
        for process in reversed(fleet.processes):
            process.stop()
