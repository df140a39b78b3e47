"""What the audit trail adds to an agent hop: audit on against audit off, in the same run.

Two identical stacks run side by side on one Redis server (databases 0 and 1), one with
CHORUS_AUDIT on (and an auditor writing to SQLite), one with it off. One-step tasks at simulator
latency 0 alternate between them, so drift on the machine hits both alike. A second figure times
the step-recording Lua call alone, where the audit event is written, on and off.

    .venv/bin/python -m bench.audit [--tasks 200] [--calls 3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import redis

from dispatcher import Dispatcher
from dispatcher.embedded import EmbeddedStack, start_redis
from workers.app import create_app
from workers.registry import AGENTS
from workers.settings import Settings
from workers.state import StepRecord, TaskState, utc_iso

AGENT = "summarizer"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def hop(dispatcher: Dispatcher) -> tuple[float, str]:
    started = time.perf_counter()
    handle = dispatcher.submit("Summarize the audit", pattern="pipeline", steps=[AGENT])
    outcome = handle.wait(60)
    return (time.perf_counter() - started) * 1000, outcome.status


def lua_call_ms(client: redis.Redis, audit: bool, calls: int) -> list[float]:
    state = TaskState(client, ttl=60, audit=audit)
    state.submit("bench-lua", pattern="pipeline", root_message={})
    samples = []
    for number in range(calls):
        record = StepRecord(
            task_id="bench-lua",
            input_message_id=f"{audit}-{number}",
            agent=AGENT,
            status="ok",
            message={"message_id": f"out-{number}", "payload": {"summary": "x" * 400}},
            raw_output="x" * 600,
            usage={"input_tokens": 900, "output_tokens": 200},
            finished_at=utc_iso(),
        )
        started = time.perf_counter()
        state.record_step(record, final_status=None)
        samples.append((time.perf_counter() - started) * 1000)
    client.delete("chorus:audit")
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200, help="one-step tasks per side")
    parser.add_argument("--calls", type=int, default=3000, help="Lua calls per side")
    args = parser.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-audit-"))
    failures = 0
    with ExitStack() as stack:
        server, url = start_redis(work)
        stack.callback(server.stop)
        sides: dict[str, Dispatcher] = {}
        for db, audit in ((0, "on"), (1, "off")):
            env = {
                **base,
                "CHORUS_REDIS_URL": url.rsplit("/", 1)[0] + f"/{db}",
                "CHORUS_AUDIT": "1" if audit == "on" else "0",
                "CHORUS_DATABASE_URL": f"sqlite:///{work / 'audit.sqlite3'}",
            }
            embedded = stack.enter_context(EmbeddedStack([AGENT], concurrency=8, base_env=env))
            dispatcher = Dispatcher(create_app(Settings.from_env(embedded.env)))
            embedded.wait_ready(lambda d=dispatcher: AGENTS[AGENT].queue in d.consumed_queues(0.5))
            sides[audit] = dispatcher
        for dispatcher in sides.values():
            for _ in range(20):  # warm up connections and caches
                hop(dispatcher)
        samples: dict[str, list[float]] = {"on": [], "off": []}
        for round_number in range(args.tasks):
            order = list(sides.items())
            for audit, dispatcher in order if round_number % 2 else reversed(order):
                ms, status = hop(dispatcher)
                failures += status != "done"
                samples[audit].append(ms)
        client = redis.Redis.from_url(url.rsplit("/", 1)[0] + "/2")
        lua = {
            "off": lua_call_ms(client, False, args.calls),
            "on": lua_call_ms(client, True, args.calls),
        }

    print(f"# audit overhead, {args.tasks} one-step tasks per side, simulator latency 0")
    print("| measure | audit off p50 | audit on p50 | added p50 | off p99 | on p99 | target |")
    print("|---|---|---|---|---|---|---|")
    for name, data in (("agent hop round trip (ms)", samples), ("step-record Lua call (ms)", lua)):
        off50, off99 = percentiles(data["off"])
        on50, on99 = percentiles(data["on"])
        added = on50 - off50
        verdict = "met" if added < 1.0 else "MISSED"
        print(
            f"| {name} | {off50:.3f} | {on50:.3f} | {added:+.3f} | {off99:.3f} | {on99:.3f} | "
            f"< 1 ms added: {verdict} |"
        )
    if failures:
        print(f"{failures} task(s) did not finish as done", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
