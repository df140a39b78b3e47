"""Redis memory per routed task, so a user can size Redis (compose runs it with noeviction).

Runs N routed requests through real workers (one process for the route agents), then reads
Redis's `used_memory`: what the tasks left behind (task hashes, blackboards, trace streams,
Celery results, dead letters) and what the audit stream holds while no auditor drains it. Both
are bounded: task state by CHORUS_STATE_TTL, the stream by CHORUS_AUDIT_MAXLEN and
CHORUS_AUDIT_MAX_AGE.

    .venv/bin/python -m bench.memory [--tasks 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from dispatcher.dispatcher import Dispatcher
from dispatcher.embedded import (
    ManagedProcess,
    celery_worker_argv,
    node_name,
    start_redis,
    start_simulator,
    wait_until,
)
from workers import keys
from workers.app import create_app
from workers.settings import Settings

ROUTE_AGENTS = ("router", "research", "code_review", "summarizer", "critic")


def run(tasks: int = 300) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-memory-"))
    server, redis_url = start_redis(work)
    simulator, sim_url = start_simulator(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(
        CHORUS_REDIS_URL=redis_url,
        ANTHROPIC_BASE_URL=sim_url,
        ANTHROPIC_API_KEY="chorus-simulator",
        CHORUS_DATABASE_URL=f"sqlite:///{work / 'audit.sqlite3'}",
    )
    dispatcher = Dispatcher(create_app(Settings.from_env(env)))
    queues = ",".join(dispatcher.app.team.agent(name).queue for name in ROUTE_AGENTS)
    argv = celery_worker_argv("workers.app", queues, node_name(["route"]), 16)
    worker = ManagedProcess("worker-route", argv, env, work)
    try:
        wanted = {f"agent.{name}" for name in ROUTE_AGENTS}
        wait_until(lambda: wanted <= dispatcher.consumed_queues(0.5), timeout=120, what="workers")
        client = redis.Redis.from_url(redis_url)
        warm = dispatcher.submit("Summarize the tradeoffs of Redis as a message broker")
        warm.wait(120)
        before = int(client.info("memory")["used_memory"])
        audit_before = int(client.xlen(keys.AUDIT))
        texts = [
            f"Summarize the tradeoffs of Redis as a message broker, case {n}" for n in range(tasks)
        ]
        with ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(lambda t: dispatcher.submit(t).wait(180), texts))
        after = int(client.info("memory")["used_memory"])
        events = int(client.xlen(keys.AUDIT)) - audit_before
        audit_bytes = int(client.memory_usage(keys.AUDIT) or 0)
        done = sum(1 for outcome in outcomes if outcome.ok)
        return {
            "tasks": tasks,
            "done": done,
            "bytes_per_task": (after - before) / tasks,
            "audit_events_per_task": events / tasks,
            "audit_bytes_per_event": audit_bytes / max(1, int(client.xlen(keys.AUDIT))),
        }
    finally:
        worker.stop()
        simulator.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args(argv)
    result = run(args.tasks)
    print(
        f"{result['done']}/{result['tasks']} routed tasks done: Redis grew "
        f"{result['bytes_per_task'] / 1e3:.1f} kB per task, audit on and no auditor draining "
        f"({result['audit_events_per_task']:.1f} audit events per task, "
        f"{result['audit_bytes_per_event'] / 1e3:.2f} kB each)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
