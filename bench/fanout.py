"""Fan-out speed-up against the simulator at a fixed latency L per call.

Prints, for each width N: the wall-clock of the fan-out, the merge call's own time, and
(wall - merge) / L, the cost of running N calls at once relative to one call (ideal 1.0).
The baseline measured in the same run is the same N calls in sequence (a pipeline of N
research steps, N <= 3) and a single call. Exit status is non-zero only when a run fails.

    .venv/bin/python -m bench.fanout [--latency 1.0] [--widths 3,10,50]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime

from dispatcher import Dispatcher
from dispatcher.embedded import EmbeddedStack, free_port
from workers.app import create_app
from workers.registry import AGENTS
from workers.settings import Settings


def timed(dispatcher: Dispatcher, **submit: object) -> tuple[float, float, str]:
    """Wall-clock seconds, the final step's own seconds, and the status."""
    started = time.perf_counter()
    text = "Assess the storage options for the archive"
    handle = dispatcher.submit(text, **submit)  # type: ignore[arg-type]
    outcome = handle.wait(300)
    wall = time.perf_counter() - started
    last = handle.trace()[-1]
    return wall, last.latency_ms / 1000, outcome.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--widths", default="3,10,50")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    base["CHORUS_WORKER_CONCURRENCY"] = str(max(64, max(widths) + 8))
    agents = ["research", "merger"]
    failures = 0
    with EmbeddedStack(
        agents,
        concurrency=max(64, max(widths) + 8),
        latency=args.latency,
        base_env=base,
        default_redis_url=f"redis://127.0.0.1:{free_port()}/0",
    ) as stack:
        dispatcher = Dispatcher(create_app(Settings.from_env(stack.env)))
        queues = {AGENTS[a].queue for a in agents}
        stack.wait_ready(lambda: queues <= dispatcher.consumed_queues(0.5))
        timed(dispatcher, pattern="pipeline", steps=["research"])  # warm up connections
        single, _, status = timed(dispatcher, pattern="pipeline", steps=["research"])
        failures += status != "done"
        sequential, _, status = timed(
            dispatcher, pattern="pipeline", steps=["research", "research", "research"]
        )
        failures += status != "done"
        L = args.latency
        print(
            f"# fan-out benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"{platform.node()} ({os.cpu_count()} cores), simulator latency L = {L:g} s"
        )
        print(
            f"baseline: one call {single:.3f} s ({single / L:.3f} L); "
            f"three calls in sequence {sequential:.3f} s ({sequential / L:.3f} L)"
        )
        print("| width | wall s | merge s | (wall - merge) / L | target | saved vs sequential |")
        print("|---|---|---|---|---|---|")
        for width in widths:
            aspects = [(f"aspect_{i}", f"Look at angle {i}.") for i in range(width)]
            timed(dispatcher, pattern="fanout", aspects=aspects)  # warm: threads, connections
            wall, merge, status = timed(dispatcher, pattern="fanout", aspects=aspects)
            failures += status != "done"
            ratio = (wall - merge) / L
            saved = ""
            if width == 3:
                saved = f"{1 - (wall - merge) / sequential:.1%} (limit 66.7%)"
            print(f"| {width} | {wall:.3f} | {merge:.3f} | {ratio:.3f} | <= 1.1 | {saved} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
