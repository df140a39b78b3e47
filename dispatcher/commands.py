"""Parsers of the operational commands (dlq, metrics), with handlers imported when they run:
their modules import Redis, Celery and prometheus_client, which `chorus --help` must not pay."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any


def lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        handler = getattr(importlib.import_module(module), name)
        return int(handler(args))

    return run


def add_dlq_commands(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="dead letters: terminal errors with their messages")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_sub.add_parser("list", help="newest first")
    listing.add_argument("--agent")
    listing.add_argument("--code", help="e.g. invalid_output, budget_exceeded, model_error")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    for name, text in (("show", "one letter in full"), ("retry", "send its message again")):
        command = dlq_sub.add_parser(name, help=text)
        command.add_argument("letter_id")
    dlq.set_defaults(handler=lazy("dispatcher.deadletters", "cmd_dlq"))


def add_metrics_commands(sub: Any) -> None:
    metrics = sub.add_parser("metrics", help="serve Prometheus metrics for the fleet")
    metrics.add_argument("--address", default="127.0.0.1")
    metrics.add_argument("--port", type=int, default=9808)
    metrics.set_defaults(handler=lazy("dispatcher.metrics", "cmd_metrics"))
