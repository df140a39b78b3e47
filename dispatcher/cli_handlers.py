"""What each `chorus` command does; imported by the parser, importing the rest on use."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from messages import ChorusError

if TYPE_CHECKING:
    from dispatcher.dispatcher import Dispatcher
    from dispatcher.handle import Reader

DEMO_REQUESTS = (
    "Summarize the tradeoffs of Redis as a message broker",
    "Please review this code for bugs: def mean(xs): return sum(xs) / len(xs)",
    "Research how prompt caching changes the cost of multi-agent systems",
)
EXIT_CODES = {"done": 0, "needs_review": 3}


def cmd_run(args: argparse.Namespace) -> int:
    from dispatcher.dispatcher import Dispatcher, request_for, resolve, workflow_agents
    from dispatcher.embedded import EmbeddedStack
    from dispatcher.progress import watch
    from dispatcher.render import describe_steps, outcome_document
    from workers.app import create_app
    from workers.loading import load_app
    from workers.settings import Settings

    inputs = _inputs(args.input or [])
    request_for(args.text, inputs)  # one clear line for an empty request, before anything starts
    documents = [_document(path) for path in args.document or []]
    if args.workflow and args.pattern and args.workflow != args.pattern:
        raise ChorusError("give --workflow or --pattern (its older name), not both")
    workflow = args.workflow or args.pattern
    options = _pattern_options(args)
    resolve(load_app(), workflow, args.agent, options)  # a bad option fails before any start
    agents = workflow_agents(load_app(), workflow, args.agent)
    echo = _stderr if args.json else print
    with ExitStack() as stack:
        if args.embedded:
            embedded = stack.enter_context(EmbeddedStack(agents, echo=echo, together=True))
            dispatcher = Dispatcher(create_app(Settings.from_env(embedded.env)))
            embedded.wait_ready(lambda: _consumes(dispatcher, agents))
        else:
            dispatcher = Dispatcher()
            dispatcher.require_workers(agents)
        handle = dispatcher.submit(
            args.text,
            workflow=workflow,
            agent=args.agent,
            inputs=inputs,
            documents=documents,
            priority=args.priority,
            batch=True if args.batch else None,
            budget_usd=args.budget_usd,
            budget_tokens=args.budget_tokens,
            **options,
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


def _inputs(items: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ChorusError(f"--input needs KEY=JSON, got {item!r}")
        try:
            inputs[key] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[key] = raw  # a bare word is a string
    return inputs


def _document(path: str) -> dict[str, str]:
    try:
        return {"name": Path(path).name, "text": Path(path).read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError) as exc:
        raise ChorusError(f"--document {path}: {exc}") from None


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
    from dispatcher.dispatcher import Dispatcher, workflow_agents
    from dispatcher.embedded import EmbeddedStack
    from dispatcher.render import describe_steps, outcome_document
    from workers.app import create_app
    from workers.settings import Settings

    agents = workflow_agents(create_app(), "route")
    print("Chorus demo: a router agent classifies each request and delegates it to a specialist.")
    print("Each agent is its own Celery worker consuming its own queue; Redis is the broker.\n")
    failures = 0
    with EmbeddedStack(agents, echo=print) as embedded:
        dispatcher = Dispatcher(create_app(Settings.from_env(embedded.env)))
        embedded.wait_ready(lambda: _consumes(dispatcher, agents))
        handles = [dispatcher.submit(text, workflow="route") for text in DEMO_REQUESTS]
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
    from dispatcher.trace import render, trace_document

    handle = _reader().handle(args.task_id)
    if not handle.status():
        raise ChorusError(f"no task {args.task_id} in Redis or the audit trail")
    document = trace_document(handle)
    print(json.dumps(document, indent=2) if args.json else "\n".join(render(document)))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    # Reading needs only Redis; a decision may publish a parked step, which needs the app.
    reading = args.review_command in ("list", "show")
    queue = (_reader() if reading else _dispatcher()).reviews
    if args.review_command == "list":
        pending = queue.list()
        if not pending:
            print("no task is waiting for review")
        for item in pending:
            name = item.review_id or item.task_id
            print(f"{name}  {item.kind}  waiting since {item.since}  {item.summary}")
        return 0
    if args.review_command == "show":
        print(json.dumps(queue.show(args.task_id), indent=2))
        return 0
    approve = args.review_command == "approve"
    queue.decide(args.task_id, approve=approve, note=args.note, reviewer=args.reviewer)
    print(f"task {args.task_id}: {'approved' if approve else 'rejected'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from dispatcher.embedded import node_name
    from workers.loading import load_app

    app = load_app()
    agents = app.team.agents
    names = list(agents) if args.all else args.agents
    if not names:
        raise ChorusError(f"name at least one agent ({', '.join(agents)}) or pass --all")
    unknown = [name for name in names if name not in agents]
    if unknown:
        raise ChorusError(f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(agents)}")
    queues = ",".join(agents[name].queue for name in names)
    argv = ["worker", "-Q", queues, "-n", node_name(names), "--loglevel", args.loglevel]
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    app.worker_main(argv)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from simulator import main as simulator_main

    options = list(args.sim_args)
    if args.help_sim:
        options = ["--help"]
    return int(simulator_main(options))


def cmd_flower(args: argparse.Namespace) -> int:
    import os

    from dispatcher import flower
    from workers.settings import Settings

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
    from dispatcher.render import describe_steps, step_summary, usd

    handle = _reader().handle(args.task_id)
    info = handle.status()
    if not info:
        raise ChorusError(f"no task {args.task_id} in Redis or the audit trail")
    steps = handle.trace()
    if args.json:
        document = {"task_id": args.task_id, **info, "steps": [step_summary(s) for s in steps]}
        print(json.dumps(document, indent=2))
        return 0
    print(f"task {args.task_id}: {info.get('status')} (workflow {info.get('pattern')})")
    for key in ("submitted_at", "started_at", "finished_at"):
        if key in info:
            print(f"  {key}: {info[key]}")
    print("\n".join(describe_steps(steps)))
    cost = usd(int(info.get("cost_micro_usd", 0)))
    print(f"  total: {info.get('input_tokens')} in / {info.get('output_tokens')} out, ${cost:.6f}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    import os

    from dispatcher.deploy import compose_file, write_k8s
    from dispatcher.deploy_spec import DEFAULT_IMAGE, DeployAgent, DeploySpec
    from workers.loading import APP_ENV, load_app

    app = load_app()
    ref = os.environ.get(APP_ENV)
    spec = DeploySpec(
        app_name=app.main,
        app_ref=ref or None,
        agents=tuple(DeployAgent(name, a.queue) for name, a in app.team.agents.items()),
        image=args.image or DEFAULT_IMAGE,
    )
    if args.deploy_command == "compose":
        text = compose_file(spec)
        if args.output:
            Path(args.output).write_text(text)
            _stderr(f"wrote {args.output}")
        else:
            sys.stdout.write(text)
        return 0
    written = write_k8s(spec, Path(args.directory))
    _stderr(f"wrote {len(written)} files under {args.directory}")
    return 0


def _reader() -> Reader:
    from dispatcher.handle import Reader

    return Reader()


def _dispatcher() -> Dispatcher:
    from dispatcher.dispatcher import Dispatcher

    return Dispatcher()


def _consumes(dispatcher: Dispatcher, agents: list[str]) -> bool:
    wanted = {dispatcher.app.team.agent(name).queue for name in agents}
    return wanted <= dispatcher.consumed_queues(timeout=0.5)


def _totals(document: dict[str, Any]) -> str:
    return (
        f"total: {document['input_tokens']} input + {document['output_tokens']} output tokens, "
        f"${document['cost_usd']:.6f}"
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
