"""The `chorus` command: demo, run, worker, sim, status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from dispatcher.audit import add_commands as add_audit_commands
from dispatcher.deadletters import add_commands as add_dlq_commands
from dispatcher.dispatcher import PATTERNS, Dispatcher, agents_for
from dispatcher.embedded import EmbeddedStack, node_name
from dispatcher.metrics import add_commands as add_metrics_commands
from dispatcher.progress import watch
from dispatcher.render import describe_steps, outcome_document, step_summary, usd
from dispatcher.trace import render as render_trace
from dispatcher.trace import trace_document
from messages import ChorusError
from workers.app import create_app
from workers.registry import AGENTS
from workers.settings import Settings

DEMO_REQUESTS = (
    "Summarize the tradeoffs of Redis as a message broker",
    "Please review this code for bugs: def mean(xs): return sum(xs) / len(xs)",
    "Research how prompt caching changes the cost of multi-agent systems",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ChorusError as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="start everything locally and route a few requests")
    demo.set_defaults(handler=cmd_demo)

    run = sub.add_parser("run", help="submit one request and wait for its answer")
    run.add_argument("text")
    run.add_argument("--pattern", default="route", choices=list(PATTERNS))
    run.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    run.add_argument(
        "--steps", help="pipeline: comma-separated agents (default research,drafter,critic)"
    )
    run.add_argument(
        "--aspect", action="append", metavar="NAME=INSTRUCTIONS", help="fanout: repeatable"
    )
    run.add_argument("--analysts", type=int, help="consensus: how many (default 3)")
    run.add_argument("--quorum", type=int, help="consensus: valid verdicts needed (default 2)")
    run.add_argument("--review-below", type=float, help="consensus: confidence for human review")
    run.add_argument("--max-rounds", type=int, help="evaluate: revision rounds (default 2)")
    run.add_argument("--max-subtasks", type=int, help="orchestrate: bound on subtasks (default 5)")
    run.add_argument("--budget-usd", type=float, help="hard spend limit for this task")
    run.add_argument("--budget-tokens", type=int, help="hard token limit for this task")
    run.add_argument("--json", action="store_true", help="print one JSON document")
    run.add_argument(
        "--embedded", action="store_true", help="start Redis, workers and simulator for this run"
    )
    run.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    run.set_defaults(handler=cmd_run)

    worker = sub.add_parser("worker", help="consume the queues of the named agents")
    worker.add_argument("agents", nargs="*", metavar="AGENT", help=f"any of: {', '.join(AGENTS)}")
    worker.add_argument("--all", action="store_true", help="consume every agent queue")
    worker.add_argument("-c", "--concurrency", type=int, default=None)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=cmd_worker)

    sim = sub.add_parser("sim", help="run the local Anthropic-compatible simulator")
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="options of python -m simulator")
    sim.set_defaults(handler=cmd_sim)

    flower = sub.add_parser("flower", help="Flower dashboard for the fleet, behind basic auth")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    flower.add_argument(
        "--basic-auth", metavar="USER:PASSWORD", help="else FLOWER_BASIC_AUTH; required"
    )
    flower.add_argument(
        "--no-auth", action="store_true", help="no auth at all; only with a loopback --address"
    )
    flower.set_defaults(handler=cmd_flower)

    review = sub.add_parser("review", help="tasks waiting for a human decision")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    review_sub.add_parser("list", help="pending reviews, oldest first")
    for name in ("show", "approve", "reject"):
        command = review_sub.add_parser(name, help=f"{name} one task")
        command.add_argument("task_id")
        if name != "show":
            command.add_argument("--note", default="", required=name == "reject")
            command.add_argument("--reviewer", default=os.environ.get("USER", "unknown"))
    review.set_defaults(handler=cmd_review)

    trace = sub.add_parser("trace", help="a task's message tree with cost per step and totals")
    trace.add_argument("task_id")
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(handler=cmd_trace)

    status = sub.add_parser("status", help="show a task's status and steps")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    add_audit_commands(sub)
    add_dlq_commands(sub)
    add_metrics_commands(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    agents = agents_for(args.pattern)
    echo = _stderr if args.json else print
    with ExitStack() as stack:
        if args.embedded:
            embedded = stack.enter_context(EmbeddedStack(agents, echo=echo))
            dispatcher = Dispatcher(create_app(Settings.from_env(embedded.env)))
            embedded.wait_ready(lambda: _consumes(dispatcher, agents))
        else:
            dispatcher = Dispatcher()
            dispatcher.require_workers(agents)
        handle = dispatcher.submit(
            args.text,
            pattern=args.pattern,
            priority=args.priority,
            budget_usd=args.budget_usd,
            budget_tokens=args.budget_tokens,
            **_pattern_options(args),
        )
        if not args.json and sys.stdout.isatty():
            watch(handle, args.timeout)
        outcome = handle.wait(args.timeout)
        document = outcome_document(outcome, handle)
        lines = describe_steps(handle.trace())
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"task {outcome.task_id}: {outcome.status}")
        print("\n".join(lines))
        print(_totals(document))
        if outcome.status == "needs_review":
            print(f"waiting for a human: chorus review show {outcome.task_id}")
    return EXIT_CODES.get(outcome.status, 1)


EXIT_CODES = {"done": 0, "needs_review": 3}


def _pattern_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.steps:
        options["steps"] = [s.strip() for s in args.steps.split(",") if s.strip()]
    if args.aspect:
        aspects = []
        for item in args.aspect:
            name, _, instructions = item.partition("=")
            if not name or not instructions:
                raise ChorusError(f"--aspect needs NAME=INSTRUCTIONS, got {item!r}")
            aspects.append((name.strip(), instructions.strip()))
        options["aspects"] = aspects
    for flag in ("analysts", "quorum", "review_below", "max_rounds", "max_subtasks"):
        value = getattr(args, flag)
        if value is not None:
            options[flag] = value
    return options


def cmd_demo(args: argparse.Namespace) -> int:
    agents = agents_for("route")
    print("Chorus demo: a router agent classifies each request and delegates it to a specialist.")
    print("Each agent is its own Celery worker consuming its own queue; Redis is the broker.\n")
    failures = 0
    with EmbeddedStack(agents, echo=print) as embedded:
        dispatcher = Dispatcher(create_app(Settings.from_env(embedded.env)))
        embedded.wait_ready(lambda: _consumes(dispatcher, agents))
        handles = [dispatcher.submit(text) for text in DEMO_REQUESTS]
        for number, (text, handle) in enumerate(zip(DEMO_REQUESTS, handles, strict=True), 1):
            outcome = handle.wait(90)
            failures += not outcome.ok
            print(f"\n[{number}] {text}")
            print(f"  task {outcome.task_id}: {outcome.status}")
            print("\n".join(describe_steps(handle.trace())))
            print(f"  {_totals(outcome_document(outcome, handle))}")
    print("\nStopped the workers and everything the demo started.")
    return 1 if failures else 0


def cmd_trace(args: argparse.Namespace) -> int:
    handle = Dispatcher().handle(args.task_id)
    if not handle.status():
        raise ChorusError(f"no task {args.task_id} in Redis or the audit trail")
    document = trace_document(handle)
    print(json.dumps(document, indent=2) if args.json else "\n".join(render_trace(document)))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    queue = Dispatcher().reviews
    if args.review_command == "list":
        pending = queue.list()
        if not pending:
            print("no task is waiting for review")
        for item in pending:
            print(f"{item.task_id}  waiting since {item.since}  {item.summary}")
        return 0
    if args.review_command == "show":
        print(json.dumps(queue.show(args.task_id), indent=2))
        return 0
    approve = args.review_command == "approve"
    queue.decide(args.task_id, approve=approve, note=args.note, reviewer=args.reviewer)
    print(f"task {args.task_id}: {'approved' if approve else 'rejected'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    names = list(AGENTS) if args.all else args.agents
    if not names:
        raise ChorusError(f"name at least one agent ({', '.join(AGENTS)}) or pass --all")
    unknown = [name for name in names if name not in AGENTS]
    if unknown:
        raise ChorusError(f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(AGENTS)}")
    app = create_app()
    queues = ",".join(AGENTS[name].queue for name in names)
    argv = ["worker", "-Q", queues, "-n", node_name(names), "--loglevel", args.loglevel]
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    app.worker_main(argv)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from simulator import main as simulator_main

    return int(simulator_main(list(args.sim_args)))


def cmd_flower(args: argparse.Namespace) -> int:
    from dispatcher import flower

    command = flower.flower_command(
        os.environ,
        port=args.port,
        address=args.address,
        basic_auth=args.basic_auth,
        no_auth=args.no_auth,
    )
    _stderr(flower.describe(command))
    flower.enable_task_events(Settings.from_env(command.env))
    flower.exec_flower(command)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    dispatcher = Dispatcher()
    handle = dispatcher.handle(args.task_id)
    info = handle.status()
    if not info:
        raise ChorusError(f"no task {args.task_id} in Redis or the audit trail")
    steps = handle.trace()
    if args.json:
        document = {"task_id": args.task_id, **info, "steps": [step_summary(s) for s in steps]}
        print(json.dumps(document, indent=2))
        return 0
    print(f"task {args.task_id}: {info.get('status')} (pattern {info.get('pattern')})")
    for key in ("submitted_at", "started_at", "finished_at"):
        if key in info:
            print(f"  {key}: {info[key]}")
    print("\n".join(describe_steps(steps)))
    cost = usd(int(info.get("cost_micro_usd", 0)))
    print(f"  total: {info.get('input_tokens')} in / {info.get('output_tokens')} out, ${cost:.6f}")
    return 0


def _consumes(dispatcher: Dispatcher, agents: list[str]) -> bool:
    wanted = {AGENTS[name].queue for name in agents}
    return wanted <= dispatcher.consumed_queues(timeout=0.5)


def _totals(document: dict[str, Any]) -> str:
    return (
        f"total: {document['input_tokens']} input + {document['output_tokens']} output tokens, "
        f"${document['cost_usd']:.6f}"
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
