"""Workflow patterns as thin Celery canvases over the per-agent queues.

Each builder returns the root message (addressed to the agent whose answer ends the task, or
the first agent) and the canvas to send. Options are keyword arguments of `Dispatcher.submit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import chain, chord, group

from messages import AgentMessage, ChorusError, TaskRequest
from workers.app import ChorusApp
from workers.flow import StepOptions
from workers.registry import AGENTS, ROUTER_TARGETS
from workers.tasks import agent_signature, aggregate_signature, branch_signatures

DEFAULT_PIPELINE = ("research", "drafter", "critic")
DEFAULT_ASPECTS: tuple[tuple[str, str], ...] = (
    ("technical", "Analyse the technical side: feasibility, architecture, risks in the build."),
    ("business", "Analyse the business side: value, cost, market and organisational impact."),
    ("risks", "Analyse what could go wrong: failure modes, dependencies, worst cases."),
)
ANALYST_PERSPECTIVES = (
    "You are analyst 1: judge it as a pragmatic engineer who has to build and run it.",
    "You are analyst 2: judge it as a finance lead who has to pay for it.",
    "You are analyst 3: judge it as a risk officer who has to answer when it fails.",
    "You are analyst 4: judge it as the customer who has to use it.",
    "You are analyst 5: judge it as a competitor looking for its weak spots.",
)

Built = tuple[AgentMessage, Any]


def _root(recipient: str, text: str) -> AgentMessage:
    return AgentMessage.root(recipient=recipient, payload=TaskRequest(text=text).model_dump())


def route(app: ChorusApp, text: str, *, priority: int | None = None) -> Built:
    root = _root("router", text)
    return root, agent_signature(app, root, StepOptions(pattern="route"), priority=priority)


def pipeline(app: ChorusApp, text: str, *, steps: Sequence[str] = DEFAULT_PIPELINE) -> Built:
    """Each step gets the original request plus every earlier step's answer as context."""
    steps = list(steps)
    _known(steps)
    if not steps:
        raise ChorusError("a pipeline needs at least one step")
    root = _root(steps[0], text)
    signatures = []
    for index, name in enumerate(steps):
        last = index == len(steps) - 1
        options = StepOptions(
            pattern="pipeline", final=last, forward_to=None if last else steps[index + 1]
        )
        message = root if index == 0 else None
        signatures.append(agent_signature(app, message, options, agent=name))
    return root, chain(*signatures) if len(signatures) > 1 else signatures[0]


def fanout(
    app: ChorusApp, text: str, *, aspects: Sequence[tuple[str, str]] = DEFAULT_ASPECTS
) -> Built:
    """Aspects analysed in parallel by research agents, then one merge that names conflicts."""
    aspects = [(str(name), str(instructions)) for name, instructions in aspects]
    if not aspects:
        raise ChorusError("a fan-out needs at least one aspect (name, instructions)")
    root = _root("merger", text)
    header = branch_signatures(app, root, "research", aspects, "fanout")
    options = StepOptions(pattern="fanout", branches=[n for n, _ in aspects], quorum=1)
    return root, chord(group(header), aggregate_signature(app, root, options))


def consensus(
    app: ChorusApp,
    text: str,
    *,
    analysts: int = 3,
    quorum: int = 2,
    review_below: float = 0.6,
) -> Built:
    """Independent analysts vote; a judge states the consensus; splits go to a human."""
    if not 1 <= analysts <= len(ANALYST_PERSPECTIVES):
        raise ChorusError(f"analysts must be between 1 and {len(ANALYST_PERSPECTIVES)}")
    if not 1 <= quorum <= analysts:
        raise ChorusError("quorum must be between 1 and the number of analysts")
    root = _root("judge", text)
    names = [f"analyst_{i + 1}" for i in range(analysts)]
    branches = list(zip(names, ANALYST_PERSPECTIVES, strict=False))
    header = branch_signatures(app, root, "analyst", branches, "consensus")
    options = StepOptions(
        pattern="consensus", branches=names, quorum=quorum, review_below=review_below
    )
    return root, chord(group(header), aggregate_signature(app, root, options))


def evaluate(app: ChorusApp, text: str, *, max_rounds: int = 2) -> Built:
    """Draft, critique, revise until the critic passes it or the rounds run out."""
    if max_rounds < 1:
        raise ChorusError("max_rounds must be at least 1")
    root = _root("drafter", text)
    options = StepOptions(pattern="evaluate", max_rounds=max_rounds)
    drafting = options.model_copy(update={"forward_to": "critic", "final": False})
    return root, chain(
        agent_signature(app, root, drafting),
        agent_signature(app, None, options, agent="critic"),
    )


def orchestrate(app: ChorusApp, text: str, *, max_subtasks: int = 5) -> Built:
    """An orchestrator plans up to `max_subtasks` subtasks at run time; a synthesizer merges."""
    if not 1 <= max_subtasks <= 10:
        raise ChorusError("max_subtasks must be between 1 and 10")
    root = _root("orchestrator", text)
    options = StepOptions(pattern="orchestrate", max_subtasks=max_subtasks)
    return root, agent_signature(app, root, options)


PATTERNS: dict[str, Callable[..., Built]] = {
    "route": route,
    "pipeline": pipeline,
    "fanout": fanout,
    "consensus": consensus,
    "evaluate": evaluate,
    "orchestrate": orchestrate,
}

AGENTS_FOR: dict[str, tuple[str, ...]] = {
    "route": ("router", *ROUTER_TARGETS),
    "pipeline": DEFAULT_PIPELINE,
    "fanout": ("research", "merger"),
    "consensus": ("analyst", "judge"),
    "evaluate": ("drafter", "critic"),
    "orchestrate": ("orchestrator", "research", "synthesizer"),
}


def _known(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in AGENTS]
    if unknown:
        raise ChorusError(f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(AGENTS)}")
