"""`python -m simulator` and `chorus sim`: run the simulator in the foreground.

`main(argv)` takes the options alone, without a program name:
`main(["--port", "8765", "--latency", "0.5"])`; one leading `--` is ignored, so
`chorus sim -- --port 8765` passes through unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from simulator.config import SimulatorConfig
from simulator.faults import FAULTS, FaultConfigError, FaultPlan
from simulator.server import serve


def _parser() -> argparse.ArgumentParser:
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
    tools = parser.add_argument_group("tool use")
    tools.add_argument(
        "--tool-turns", type=int, default=1, help="tool turns (tool_choice auto) before answering"
    )
    tools.add_argument(
        "--parallel-tools", type=int, default=2, help="most distinct tools per turn (1: never)"
    )
    tools.add_argument(
        "--no-tool-preamble", action="store_true", help="no text block before tool calls"
    )
    batches = parser.add_argument_group("message batches")
    batches.add_argument(
        "--batch-delay", type=float, default=1.0, help="seconds until a batch ends"
    )
    batches.add_argument("--batch-error-rate", type=float, default=0.0, metavar="RATE")
    batches.add_argument("--batch-expire-rate", type=float, default=0.0, metavar="RATE")
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> SimulatorConfig:
    """The configuration `main` would serve with; exits with a usage error on bad options."""
    parser = _parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--"]:
        args_list = args_list[1:]
    args = parser.parse_args(args_list)
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
        tool_turns=args.tool_turns,
        parallel_tools=args.parallel_tools,
        tool_preamble=not args.no_tool_preamble,
        batch_delay=args.batch_delay,
        batch_error_rate=args.batch_error_rate,
        batch_expire_rate=args.batch_expire_rate,
    )
    try:
        FaultPlan(rates=dict(rates), schedule=list(config.fault_schedule))
    except FaultConfigError as exc:
        parser.error(str(exc))
    if config.tool_turns < 0 or config.parallel_tools < 1:
        parser.error("--tool-turns must be >= 0 and --parallel-tools >= 1")
    batch_rates = (config.batch_error_rate, config.batch_expire_rate)
    if config.batch_delay < 0 or any(not 0 <= r <= 1 for r in batch_rates) or sum(batch_rates) > 1:
        parser.error("--batch-delay must be >= 0 and the batch rates within 0..1, adding up to 1")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)

    async def run() -> None:
        task = asyncio.ensure_future(serve(config))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return 0
