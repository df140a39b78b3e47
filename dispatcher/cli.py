"""The `chorus` command: demo, run, worker, sim, status, trace, review, deploy and more.

`chorus -A my_team ...` (or CHORUS_APP=my_team) runs any command for that app; without it the
seed team is used. Each handler imports what it needs when it runs, so `chorus --help` and the
read-only commands start fast and never import the Anthropic SDK.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dispatcher import cli_handlers as handlers
from dispatcher.audit import add_commands as add_audit_commands
from dispatcher.commands import add_dlq_commands, add_metrics_commands
from dispatcher.console import add_commands as add_console_commands
from messages import ChorusError
from workers.loading import APP_ENV

PATTERN_FLAGS = ("analysts", "quorum", "review_below", "max_rounds", "max_subtasks")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(args_list)
    if extra and getattr(args, "command", None) != "sim":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.sim_args = extra
    if args.app:
        os.environ[APP_ENV] = _app_ref(args.app)
    try:
        return int(args.handler(args))
    except ChorusError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _app_ref(ref: str) -> str:
    """A team file is named by its absolute path, so workers started elsewhere find it too."""
    return str(Path(ref).resolve()) if ref.endswith(".toml") else ref


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description=__doc__)
    parser.add_argument(
        "-A",
        "--app",
        metavar="APP",
        help=f"the app: a module (or module:attr) or a team.toml (else ${APP_ENV}, else the "
        "seed team)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="start everything locally and route a few requests")
    demo.set_defaults(handler=handlers.cmd_demo)

    run = sub.add_parser("run", help="submit one request and wait for its answer")
    run.add_argument("text")
    run.add_argument("--workflow", "-w", help="one of the app's workflows (default: its first)")
    run.add_argument("--pattern", help="older name of --workflow (the seed's are its patterns)")
    run.add_argument("--agent", help="run one agent alone instead of a workflow")
    run.add_argument(
        "--input", action="append", metavar="KEY=JSON", help="a JSON input for every step"
    )
    run.add_argument(
        "--document", action="append", metavar="PATH", help="a file stored once, read by id"
    )
    run.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    run.add_argument("--batch", action="store_true", help="every model call through batches")
    run.add_argument("--steps", help="pipeline: comma-separated agents")
    run.add_argument(
        "--aspect", action="append", metavar="NAME=INSTRUCTIONS", help="fanout: repeatable"
    )
    run.add_argument("--analysts", type=int, help="consensus: how many")
    run.add_argument("--quorum", type=int, help="fanout/consensus: valid answers needed")
    run.add_argument("--review-below", type=float, help="consensus: confidence for human review")
    run.add_argument("--max-rounds", type=int, help="evaluate: drafts allowed")
    run.add_argument("--max-subtasks", type=int, help="orchestrate: bound on subtasks")
    run.add_argument("--budget-usd", type=float, help="hard spend limit for this task")
    run.add_argument("--budget-tokens", type=int, help="hard token limit for this task")
    run.add_argument("--json", action="store_true", help="print one JSON document")
    run.add_argument(
        "--embedded", action="store_true", help="start Redis, workers and simulator for this run"
    )
    run.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    run.set_defaults(handler=handlers.cmd_run)

    worker = sub.add_parser("worker", help="consume the queues of the named agents")
    worker.add_argument("agents", nargs="*", metavar="AGENT", help="agents of the app")
    worker.add_argument("--all", action="store_true", help="consume every agent queue")
    worker.add_argument("-c", "--concurrency", type=int, default=None)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=handlers.cmd_worker)

    sim = sub.add_parser(
        "sim",
        help="run the local Anthropic-compatible simulator (options: chorus sim --help-sim)",
    )
    sim.add_argument("--help-sim", action="store_true", help="the simulator's own options")
    sim.set_defaults(handler=handlers.cmd_sim)

    flower = sub.add_parser("flower", help="Flower dashboard for the fleet, behind basic auth")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    flower.add_argument(
        "--basic-auth", metavar="USER:PASSWORD", help="else FLOWER_BASIC_AUTH; required"
    )
    flower.add_argument(
        "--no-auth", action="store_true", help="no auth at all; only with a loopback --address"
    )
    flower.set_defaults(handler=handlers.cmd_flower)

    review = sub.add_parser("review", help="tasks waiting for a human decision")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    review_sub.add_parser("list", help="pending reviews, oldest first")
    for name in ("show", "approve", "reject"):
        command = review_sub.add_parser(name, help=f"{name} one task")
        command.add_argument("task_id")
        if name != "show":
            command.add_argument("--note", default="", required=name == "reject")
            command.add_argument("--reviewer", default=os.environ.get("USER", "unknown"))
    review.set_defaults(handler=handlers.cmd_review)

    trace = sub.add_parser("trace", help="a task's message tree with cost per step and totals")
    trace.add_argument("task_id")
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(handler=handlers.cmd_trace)

    status = sub.add_parser("status", help="show a task's status and steps")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=handlers.cmd_status)

    deploy = sub.add_parser("deploy", help="deployment files generated from the app's agents")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True)
    compose = deploy_sub.add_parser("compose", help="docker-compose.yml on standard output")
    compose.add_argument("--output", "-o", help="write it to this file instead")
    k8s = deploy_sub.add_parser("k8s", help="Kubernetes manifests (KEDA autoscaling) into DIR")
    k8s.add_argument("directory")
    for command in (compose, k8s):
        command.add_argument("--image", help="the image every Chorus process runs")
    deploy.set_defaults(handler=handlers.cmd_deploy)

    add_audit_commands(sub)
    add_dlq_commands(sub)
    add_metrics_commands(sub)
    add_console_commands(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
