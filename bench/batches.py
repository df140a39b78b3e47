"""Batched against synchronous: N pipeline and N consensus tasks through the Message Batches API,
and the same tasks through the Messages API, in the same run on one simulator.

Cost is from the simulator's ledger (what the provider billed, each batched call at the batch
price); the simulator's prompt cache is off for this run (its minimum length is out of reach),
so both runs bill the same kinds of tokens for the same work and the ratio is the batch
discount alone. Time: each batched task waits the simulator's batch delay once per round of
batched calls (pipeline: one per step; consensus: the analysts together, then the judge);
what it takes beyond that is the batcher's gathering, polling and the resumes.

    .venv/bin/python -m bench.batches [--tasks 20] [--delay 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dispatcher import Dispatcher
from dispatcher.dispatcher import TaskHandle
from dispatcher.embedded import start_redis, start_simulator, start_worker, wait_until
from workers.app import create_app
from workers.models import DEFAULT_PRICES, Usage, cost_micro_usd
from workers.settings import Settings

AGENTS = ("research", "drafter", "critic", "analyst", "judge")
WORKFLOWS = ("pipeline", "consensus")
TARGET = (0.49, 0.51)
GATHER_SECONDS = 0.2
"""CHORUS_BATCH_MAX_AGE_SECONDS for the run: a request waits at most this long for others."""
POLL_SECONDS = 0.1


def billed(sim_url: str, task_id: str) -> int:
    """Micro-dollars the simulator's ledger billed for one task."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{sim_url}/_sim/ledger?user_id={quote(task_id)}") as answer:
        report: dict[str, Any] = json.loads(answer.read())
    total = 0
    for call in report["calls"]:
        price = DEFAULT_PRICES[call["model"]]
        total += cost_micro_usd(Usage(**call["usage"]), price.batch() if call["batch"] else price)
    return total


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def rounds(handle: TaskHandle, workflow: str) -> int:
    """Sequential batch waits of a batched task (a stricter retry adds one)."""
    steps = handle.trace()
    calls = {s.agent: len(s.batched_calls) for s in steps}
    if workflow == "pipeline":
        return sum(calls.values())
    analysts = [len(s.batched_calls) for s in steps if s.agent == "analyst"]
    return max(analysts, default=0) + calls.get("judge", 0)


def run(tasks: int, delay: float, work: Path, redis_url: str | None = None) -> dict[str, Any]:
    server = None
    if redis_url is None:
        server, redis_url = start_redis(work)
    sim, sim_url = start_simulator(
        work, extra_args=("--batch-delay", str(delay), "--min-cache-tokens", str(10**9))
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))},
        "CHORUS_REDIS_URL": redis_url,
        "ANTHROPIC_BASE_URL": sim_url,
        "ANTHROPIC_API_KEY": "sk-sim-bench",
        "CHORUS_AUDIT": "0",
        "CHORUS_BATCH_POLL_SECONDS": str(POLL_SECONDS),
        "CHORUS_BATCH_MAX_AGE_SECONDS": str(GATHER_SECONDS),
    }
    worker = start_worker(list(AGENTS), env, work, concurrency=32)
    try:
        dispatcher = Dispatcher(create_app(Settings.from_env(env)))
        wanted = {f"agent.{a}" for a in AGENTS}
        wait_until(lambda: wanted <= dispatcher.consumed_queues(0.5), timeout=120, what="worker")
        return _measure(dispatcher, sim_url, tasks, delay)
    finally:
        worker.stop()
        sim.stop()
        if server is not None:
            server.stop()


def _measure(dispatcher: Dispatcher, sim_url: str, tasks: int, delay: float) -> dict[str, Any]:
    jobs: list[tuple[str, bool, str]] = [
        (workflow, batch, f"Assess storage plan {i} for the {workflow} archive")
        for workflow in WORKFLOWS
        for i in range(tasks)
        for batch in (True, False)
    ]

    # Submitted together, waited for one after the other (Celery's result consumer is not
    # for many threads of one process); each task's time is its own, from its task hash.
    handles = [
        dispatcher.submit(text, workflow=workflow, batch=batch) for workflow, batch, text in jobs
    ]
    results: list[dict[str, Any]] = []
    for (workflow, batch, _), handle in zip(jobs, handles, strict=True):
        outcome = handle.wait(600)
        info = handle.status()
        elapsed = _seconds(info["finished_at"]) - _seconds(info["submitted_at"])
        results.append(
            {
                "workflow": workflow,
                "batch": batch,
                "status": outcome.status,
                "cost": outcome.cost_micro_usd,
                "billed": billed(sim_url, handle.task_id),
                "elapsed": elapsed,
                "rounds": rounds(handle, workflow) if batch else 0,
            }
        )
    batched = [r for r in results if r["batch"]]
    direct = [r for r in results if not r["batch"]]
    cost_b, cost_s = sum(r["billed"] for r in batched), sum(r["billed"] for r in direct)
    added = [r["elapsed"] - r["rounds"] * delay for r in batched]
    per_round = [(r["elapsed"] - r["rounds"] * delay) / r["rounds"] for r in batched if r["rounds"]]
    return {
        "tasks": len(results),
        "per_workflow": tasks,
        "delay": delay,
        "batched_usd": cost_b / 1e6,
        "sync_usd": cost_s / 1e6,
        "ratio": cost_b / cost_s,
        "costs_match_ledger": all(r["cost"] == r["billed"] for r in results),
        "statuses": sorted({r["status"] for r in results}),
        "added_seconds_per_task": statistics.mean(added),
        "added_seconds_per_round": statistics.mean(per_round) if per_round else 0.0,
        "sync_seconds_per_task": statistics.mean(r["elapsed"] for r in direct),
        "rounds_per_task": statistics.mean(r["rounds"] for r in batched),
    }


def rows(work: Path, redis_url: str, tasks: int, delay: float = 2.0) -> list[list[Any]]:
    """The bench table's rows: [figure, Chorus, baseline, ratio, target, met]."""
    r = run(tasks, delay, work, redis_url)
    met = TARGET[0] <= r["ratio"] <= TARGET[1] and r["costs_match_ledger"]
    return [
        [
            f"10. {r['per_workflow']} pipeline + {r['per_workflow']} consensus, batched: cost",
            f"${r['batched_usd']:.6f} (ledger)",
            f"synchronous ${r['sync_usd']:.6f}",
            r["ratio"],
            "0.50 ± 0.01",
            met,
        ],
        [
            "10. batched: wall-clock added beyond the batch delay",
            f"{r['added_seconds_per_task']:.2f} s/task ({r['added_seconds_per_round']:.2f} s "
            f"per batch round, {r['rounds_per_task']:.1f} rounds of {r['delay']:g} s)",
            f"synchronous {r['sync_seconds_per_task']:.2f} s/task",
            None,
            "reported",
            None,
        ],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20, help="tasks per workflow and mode")
    parser.add_argument("--delay", type=float, default=2.0, help="simulator batch delay (s)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-batches-"))
    result = run(args.tasks, args.delay, work)
    for name, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{name:<26} {shown}")
    print(f"batched / synchronous cost: {result['ratio']:.2f}")
    ok = TARGET[0] <= result["ratio"] <= TARGET[1] and result["costs_match_ledger"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
