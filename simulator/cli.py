"""`python -m simulator` and `chorus sim`: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

from simulator.config import SimulatorConfig
from simulator.faults import FAULTS, FaultConfigError, FaultPlan
from simulator.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per call")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra random seconds per call")
    parser.add_argument("--seed", type=int, default=0)
    for fault in FAULTS:
        parser.add_argument(
            f"--{fault.replace('_', '-')}",
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"share of requests answered with the {fault} fault (0..1)",
        )
    parser.add_argument(
        "--schedule", default="", help="comma-separated faults for the first requests (ok = none)"
    )
    parser.add_argument("--retry-after", type=float, default=0.2, help="seconds a 429 asks for")
    parser.add_argument("--hang-seconds", type=float, default=3600.0)
    parser.add_argument("--min-cache-tokens", type=int, default=1024)
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute per model")
    parser.add_argument("--itpm", type=int, default=None, help="input tokens per minute")
    parser.add_argument("--otpm", type=int, default=None, help="output tokens per minute")
    args = parser.parse_args(argv)
    rates = {f: getattr(args, f) for f in FAULTS if getattr(args, f)}
    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        latency=args.latency,
        jitter=args.jitter,
        seed=args.seed,
        fault_rates=rates,
        fault_schedule=tuple(s for s in args.schedule.split(",") if s),
        retry_after=args.retry_after,
        hang_seconds=args.hang_seconds,
        min_cache_tokens=args.min_cache_tokens,
        rpm=args.rpm,
        itpm=args.itpm,
        otpm=args.otpm,
    )
    try:
        FaultPlan(rates=dict(rates), schedule=list(config.fault_schedule))
    except FaultConfigError as exc:
        parser.error(str(exc))

    async def run() -> None:
        task = asyncio.ensure_future(serve(config))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return 0
