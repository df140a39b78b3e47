"""Blocks compiled to Celery canvases over the per-agent queues.

A pipeline is a chain whose links hand their answer on; a fan-out or consensus is a chord
whose body aggregates; route, evaluate and orchestrate grow at run time (the step replaces
itself with the canvas `continuation_canvas` builds). A fan-out after a pipeline step cannot be
built before that step's hand-off exists, so it travels in the step's `then` and is built from
the hand-off. Every message id a canvas introduces is derived from its parent message's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from celery import chain, chord, group
from celery.canvas import _chain

from messages import AgentMessage
from workers.blocks import (
    Block,
    BlockError,
    Consensus,
    Evaluate,
    Fanout,
    Orchestrate,
    Pipeline,
    Route,
    Step,
    entry_agent,
    from_data,
    kind,
    to_data,
)
from workers.flow import Continuation, Emit, StepOptions, planned_subtasks
from workers.registry import PRIORITY_LEVELS

if TYPE_CHECKING:
    from workers.app import ChorusApp


@dataclass(frozen=True)
class Place:
    """Where a block sits: what its last step emits and what follows it."""

    workflow: str
    emit: Emit = "final"
    path: str = "w"
    forward_to: str | None = None
    then: dict[str, Any] | None = None
    priority: int | None = None
    batch: bool = False
    branch: str | None = None
    instructions: str | None = None
    adopt: bool = False

    def options(self, block: Block, **fields: Any) -> StepOptions:
        values: dict[str, Any] = {
            "workflow": self.workflow,
            "pattern": kind(block),
            "emit": self.emit,
            "path": self.path,
            "forward_to": self.forward_to,
            "then": self.then,
            "priority": self.priority,
            "batch": self.batch,
            "branch": self.branch,
            "instructions": self.instructions,
            "adopt": self.path if self.adopt else None,
        }
        return StepOptions(**{**values, **fields})


def build(app: ChorusApp, block: Block, message: AgentMessage | None, place: Place) -> Any:
    """The canvas that runs `block` on `message` (None: the previous chain link's answer)."""
    if isinstance(block, Step):
        instructions = block.instructions or place.instructions
        options = replace(place, instructions=instructions).options(block)
        return agent_signature(app, block.agent, message, options)
    if isinstance(block, Pipeline):
        return _pipeline(app, block, message, place)
    if isinstance(block, Route):
        options = place.options(block, role="route", targets=list(block.targets))
        return agent_signature(app, block.router, message, options)
    if isinstance(block, Evaluate):
        return _evaluate(app, block, message, place, round_=1)
    if isinstance(block, Orchestrate):
        options = place.options(
            block,
            role="plan",
            worker=block.worker,
            synthesizer=block.synthesizer,
            max_subtasks=block.max_subtasks,
        )
        return agent_signature(app, block.planner, message, options)
    if message is None:
        raise BlockError(f"a {kind(block)} must start from a message (put a step before it)")
    if isinstance(block, Fanout):
        branches = [(b.name, b.block) for b in block.branches]
        body = place.options(block, role="merge", quorum=block.quorum, adopt=None)
        return _chord(app, branches, message, place, block.merge, body)
    assert isinstance(block, Consensus)
    names = [f"analyst_{i + 1}" for i in range(len(block.perspectives))]
    analysts: list[tuple[str, Block]] = [
        (name, Step(block.agent, perspective))
        for name, perspective in zip(names, block.perspectives, strict=True)
    ]
    judge = place.options(
        block, role="judge", quorum=block.quorum, review_below=block.review_below, adopt=None
    )
    return _chord(app, analysts, message, place, block.judge, judge)


def _pipeline(app: ChorusApp, block: Pipeline, message: AgentMessage | None, place: Place) -> Any:
    steps = list(block.steps)
    links = []
    index = 0
    while index < len(steps):
        following = index + 1
        if following < len(steps) and isinstance(steps[following], Fanout | Consensus):
            # The chord needs this step's hand-off: it is built from it at run time.
            chord_last = following == len(steps) - 1
            then: dict[str, Any] | None = {
                "block": to_data(steps[following]),
                "emit": place.emit if chord_last else "handoff",
                "path": f"{place.path}.{following}",
                "forward_to": place.forward_to if chord_last else _entry(steps, following + 1),
                "then": place.then if chord_last else None,
            }
            emit: Emit = "handoff"
            forward_to: str | None = entry_agent(steps[following])
            following += 1
        elif following >= len(steps):
            then, emit, forward_to = place.then, place.emit, place.forward_to
        else:
            then, emit, forward_to = None, "handoff", entry_agent(steps[following])
        first = index == 0
        link_place = replace(
            place,
            emit=emit,
            path=f"{place.path}.{index}",
            forward_to=forward_to,
            then=then,
            branch=place.branch if first else None,
            instructions=place.instructions if first else None,
            adopt=place.adopt and first,
        )
        links.append(build(app, steps[index], message if first else None, link_place))
        index = following
    return chain(*links) if len(links) > 1 else links[0]


def _entry(steps: list[Block], index: int) -> str | None:
    return entry_agent(steps[index]) if index < len(steps) else None


def _evaluate(
    app: ChorusApp, block: Evaluate, message: AgentMessage | None, place: Place, round_: int
) -> Any:
    drafting = replace(place, emit="handoff", forward_to=block.critic, then=None)
    drafter = agent_signature(app, block.agent, message, drafting.options(block))
    critic_place = replace(place, branch=None, instructions=None, adopt=False)
    critic_options = critic_place.options(
        block,
        role="critic",
        reviser=block.agent,
        critic=block.critic,
        round=round_,
        max_rounds=block.max_rounds,
    )
    return chain(drafter, agent_signature(app, block.critic, None, critic_options))


def _chord(
    app: ChorusApp,
    branches: list[tuple[str, Block]],
    message: AgentMessage,
    place: Place,
    aggregator: str,
    body: StepOptions,
) -> Any:
    header = []
    names = [name for name, _ in branches]
    for name, branch in branches:
        branch_place = Place(
            workflow=place.workflow,
            emit="branch",
            path=f"{place.path}.{name}",
            priority=place.priority,
            batch=place.batch,
            branch=name,
            adopt=True,
        )
        header.append(build(app, branch, message, branch_place))
    body = body.model_copy(update={"branches": names})
    return chord(group(header), aggregate_signature(app, aggregator, message, body))


def continuation_canvas(app: ChorusApp, step: Continuation, options: StepOptions) -> Any:
    """The canvas a step replaces itself with when its workflow grows at run time."""
    message = step.message
    place = Place(
        workflow=options.workflow,
        emit=options.emit,
        path=options.path,
        forward_to=options.forward_to,
        then=options.then,
        priority=options.priority,
        batch=options.batch,
    )
    if step.kind == "delegate":
        route = message.payload.get("context", {}).get("route", {})
        chosen = PRIORITY_LEVELS.get(str(route.get("priority", "")), options.priority)
        work = options.model_copy(update={"role": "work", "adopt": None, "priority": chosen})
        return agent_signature(app, message.recipient, message, work)
    if step.kind == "revise":
        block = Evaluate(options.reviser or "", options.critic or "", options.max_rounds)
        return _evaluate(app, block, message, place, round_=options.round + 1)
    if step.kind == "fan_out":
        subtasks = planned_subtasks(message)
        labels = labels_for([name for name, _ in subtasks])
        branches: list[tuple[str, Block]] = [
            (label, Step(options.worker or "", instructions))
            for label, (_, instructions) in zip(labels, subtasks, strict=True)
        ]
        body = options.model_copy(
            update={"role": "merge", "adopt": None, "quorum": 1, "pattern": "orchestrate"}
        )
        return _chord(app, branches, message, place, options.synthesizer or "", body)
    then = options.then or {}
    later = replace(
        place,
        emit=then.get("emit", "final"),
        path=str(then.get("path", options.path)),
        forward_to=then.get("forward_to"),
        then=then.get("then"),
    )
    return build(app, from_data(then["block"]), message, later)


def agent_signature(
    app: ChorusApp, agent: str, message: AgentMessage | None, options: StepOptions
) -> Any:
    """The signature that delivers `message` (None: the previous link's answer) to `agent`."""
    spec = app.team.agent(agent)
    args = () if message is None else (message.to_dict(),)
    extra: dict[str, Any] = {"queue": spec.queue, **_reprs(message, options)}
    if options.priority is not None:
        extra["priority"] = options.priority
    kwargs = {"options": options.model_dump(exclude_defaults=True)}
    return app.signature(spec.task_name, args=args, kwargs=kwargs, **extra)


def aggregate_signature(
    app: ChorusApp, agent: str, message: AgentMessage, options: StepOptions
) -> Any:
    """A chord body: the branch answers arrive as its first argument, `message` beside them."""
    spec = app.team.agent(agent)
    kwargs = {"message": message.to_dict(), "options": options.model_dump(exclude_defaults=True)}
    extra: dict[str, Any] = {"queue": spec.queue, **_reprs(message, options)}
    if options.priority is not None:
        extra["priority"] = options.priority
    return app.signature(spec.task_name, kwargs=kwargs, **extra)


def _reprs(message: AgentMessage | None, options: StepOptions) -> dict[str, str]:
    """What Flower and logs show for a task: ids, not payloads (short, and nothing private)."""
    shown = "<previous step's answer>"
    if message is not None:
        shown = f"<AgentMessage {message.message_id} task {message.task_id} to {message.recipient}>"
    return {
        "argsrepr": f"({shown},)",
        "kwargsrepr": f"{{workflow: {options.workflow}, block: {options.pattern}}}",
    }


def planned_agents(canvas: Any) -> dict[str, int]:
    """How many steps of each agent a canvas will run (chains, groups, chords, signatures)."""
    counts: dict[str, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, chord):
            walk(node.tasks)
            walk(node.body)
        elif isinstance(node, _chain | group):
            for task in node.tasks:
                walk(task)
        elif isinstance(node, list | tuple):
            for task in node:
                walk(task)
        elif node is not None:
            name = str(getattr(node, "task", "")).removeprefix("chorus.agent.")
            counts[name] = counts.get(name, 0) + 1

    walk(canvas)
    return counts


def labels_for(names: list[str]) -> list[str]:
    """Model-chosen names made safe and unique, so branches stay distinguishable."""
    labels: list[str] = []
    for index, name in enumerate(names, 1):
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "subtask"
        labels.append(f"{index}_{slug}")
    return labels
