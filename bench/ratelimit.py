"""Rate-limit efficiency: a backlog through 4 worker processes against a simulator that enforces
requests and tokens per minute, with the fleet's shared limiter on and then off, in one run.

The simulator's buckets start full (as the API's do), so the ideal number of calls finished by
time t is capacity + rate * t; efficiency = calls / (capacity + rate * elapsed).

    .venv/bin/python -m bench.ratelimit [--rpm 240] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from dispatcher import Dispatcher
from dispatcher.embedded import start_redis, start_simulator, start_worker, wait_until
from workers.app import create_app
from workers.settings import Settings

AGENT = "summarizer"
PROCESSES = 4


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def run(
    limiter: bool, *, rpm: int, itpm: int, otpm: int, seconds: float, work: Path, redis_url: str
) -> dict[str, Any]:
    with ExitStack() as stack:
        sim, sim_url = start_simulator(
            work, extra_args=["--rpm", str(rpm), "--itpm", str(itpm), "--otpm", str(otpm)]
        )
        stack.callback(sim.stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
        env.update(
            CHORUS_REDIS_URL=redis_url,
            ANTHROPIC_BASE_URL=sim_url,
            ANTHROPIC_API_KEY="sk-sim-bench",
            CHORUS_RATE_LIMITER="1" if limiter else "0",
            CHORUS_RATE_LIMIT_RPM=str(rpm),
            CHORUS_RATE_LIMIT_ITPM=str(itpm),
            CHORUS_RATE_LIMIT_OTPM=str(otpm),
            CHORUS_AUDIT="0",
        )
        redis.Redis.from_url(redis_url).flushdb()
        for _ in range(PROCESSES):
            worker = start_worker([AGENT], env, work, concurrency=32)
            stack.callback(worker.stop)
        dispatcher = Dispatcher(create_app(Settings.from_env(env)))

        def consumers() -> int:
            replies = dispatcher.app.control.ping(timeout=0.5) or []
            return sum(name.startswith(f"{AGENT}.") for reply in replies for name in reply)

        wait_until(lambda: consumers() >= PROCESSES, timeout=60, what="bench workers")
        tasks = rpm + int(rpm / 60 * seconds)
        started = time.perf_counter()
        handles = [
            dispatcher.submit(f"Summarize ticket {n}", pattern="pipeline", steps=[AGENT])
            for n in range(tasks)
        ]
        with ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(lambda h: h.wait(600), handles))
        elapsed = time.perf_counter() - started
        done = sum(o.status == "done" for o in outcomes)
        return {
            "tasks": tasks,
            "done": done,
            "failed": tasks - done,
            "elapsed": elapsed,
            "efficiency": done / (rpm + rpm / 60 * elapsed),
            "rate_limited": health(sim_url)["rate_limited"],
            "retries": sum(o.retries for o in outcomes),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpm", type=int, default=240)
    parser.add_argument("--itpm", type=int, default=2_000_000)
    parser.add_argument("--otpm", type=int, default=400_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="backlog beyond the burst")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-ratelimit-"))
    server, url = start_redis(work)
    try:
        results = {
            on: run(
                on,
                rpm=args.rpm,
                itpm=args.itpm,
                otpm=args.otpm,
                seconds=args.seconds,
                work=work,
                redis_url=url,
            )
            for on in (True, False)
        }
    finally:
        server.stop()
    print(
        f"# rate-limit efficiency: {PROCESSES} worker processes, simulator limits "
        f"{args.rpm} rpm / {args.itpm} itpm / {args.otpm} otpm, a backlog of "
        f"{results[True]['tasks']} one-call tasks"
    )
    print("| limiter | done | failed | seconds | achieved / limit | 429s | retries | target |")
    print("|---|---|---|---|---|---|---|---|")
    for on, r in results.items():
        target = ">= 0.95 with no 429: " + (
            "met" if r["efficiency"] >= 0.95 and r["rate_limited"] == 0 else "MISSED"
        )
        print(
            f"| {'on' if on else 'off'} | {r['done']} | {r['failed']} | {r['elapsed']:.1f} | "
            f"{r['efficiency']:.3f} | {r['rate_limited']} | {r['retries']} | "
            f"{target if on else 'baseline'} |"
        )
    return 0 if results[True]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
