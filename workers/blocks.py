"""Workflow building blocks as plain data: what a workflow is, not how it runs.

Blocks nest (a pipeline step may be a fan-out, a fan-out branch may be a pipeline). They are
frozen and JSON-serialisable, because a block that starts after a step has answered travels
inside that step's options (`StepOptions.then`). `workers.canvas` turns them into Celery
canvases over the per-agent queues; `chorus` is where users build them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from messages import ChorusError


class BlockError(ChorusError):
    """A workflow that cannot run as declared; the message names the fix."""


@dataclass(frozen=True)
class Step:
    """One agent answers."""

    agent: str
    instructions: str | None = None


@dataclass(frozen=True)
class Pipeline:
    """Each step gets the request plus every earlier step's answer as context."""

    steps: tuple[Block, ...]


@dataclass(frozen=True)
class Branch:
    name: str
    block: Block


@dataclass(frozen=True)
class Fanout:
    """Branches in parallel, then one merge step that sees every branch's answer or failure."""

    branches: tuple[Branch, ...]
    merge: str
    quorum: int = 1


@dataclass(frozen=True)
class Route:
    """A (cheap) router picks one target; the target's answer is the block's answer."""

    targets: tuple[str, ...]
    router: str = "router"


@dataclass(frozen=True)
class Consensus:
    """Independent analysts vote, a judge states the consensus; a split goes to a human."""

    agent: str
    judge: str
    perspectives: tuple[str, ...]
    quorum: int
    review_below: float | None = None


@dataclass(frozen=True)
class Evaluate:
    """A drafter writes, a critic passes it or asks for a revision, up to `max_rounds`."""

    agent: str
    critic: str
    max_rounds: int = 2


@dataclass(frozen=True)
class Orchestrate:
    """A planner splits the work at run time; workers run the parts; a synthesizer merges."""

    planner: str
    worker: str
    synthesizer: str
    max_subtasks: int = 5


Block = Step | Pipeline | Fanout | Route | Consensus | Evaluate | Orchestrate

KINDS: dict[str, type[Any]] = {
    "step": Step,
    "pipeline": Pipeline,
    "fanout": Fanout,
    "route": Route,
    "consensus": Consensus,
    "evaluate": Evaluate,
    "orchestrate": Orchestrate,
}


@dataclass(frozen=True)
class Workflow:
    name: str
    block: Block
    batch: bool = False
    """Every model call of the workflow's tasks goes through the Message Batches API."""
    options: dict[str, Any] = field(default_factory=dict)


def kind(block: Block) -> str:
    for name, cls in KINDS.items():
        if isinstance(block, cls):
            return name
    raise BlockError(f"not a workflow block: {block!r}")


def agents_of(block: Block) -> list[str]:
    """Every agent a block may run, in first-use order (a router's targets included)."""
    names: list[str] = []

    def add(*more: str) -> None:
        names.extend(name for name in more if name not in names)

    def walk(node: Block) -> None:
        if isinstance(node, Step):
            add(node.agent)
        elif isinstance(node, Pipeline):
            for step in node.steps:
                walk(step)
        elif isinstance(node, Fanout):
            for branch in node.branches:
                walk(branch.block)
            add(node.merge)
        elif isinstance(node, Route):
            add(node.router, *node.targets)
        elif isinstance(node, Consensus):
            add(node.agent, node.judge)
        elif isinstance(node, Evaluate):
            add(node.agent, node.critic)
        else:
            add(node.planner, node.worker, node.synthesizer)

    walk(block)
    return names


def entry_agent(block: Block) -> str:
    """The agent a block's first message is addressed to."""
    if isinstance(block, Step):
        return block.agent
    if isinstance(block, Pipeline):
        return entry_agent(block.steps[0])
    if isinstance(block, Fanout):
        return block.merge
    if isinstance(block, Route):
        return block.router
    if isinstance(block, Consensus):
        return block.judge
    if isinstance(block, Evaluate):
        return block.agent
    return block.planner


def to_data(block: Block) -> dict[str, Any]:
    """JSON form (the `then` of a step's options)."""
    data: dict[str, Any] = {"kind": kind(block)}
    if isinstance(block, Pipeline):
        data["steps"] = [to_data(step) for step in block.steps]
    elif isinstance(block, Fanout):
        data["branches"] = [{"name": b.name, "block": to_data(b.block)} for b in block.branches]
        data.update(merge=block.merge, quorum=block.quorum)
    else:
        data.update({k: list(v) if isinstance(v, tuple) else v for k, v in block.__dict__.items()})
    return data


def from_data(data: dict[str, Any]) -> Block:
    fields = dict(data)
    cls = KINDS.get(str(fields.pop("kind", "")))
    if cls is None:
        raise BlockError(f"unknown block kind in {data!r}; known: {', '.join(KINDS)}")
    if cls is Pipeline:
        return Pipeline(tuple(from_data(step) for step in fields["steps"]))
    if cls is Fanout:
        branches = tuple(Branch(b["name"], from_data(b["block"])) for b in fields["branches"])
        return Fanout(branches, fields["merge"], int(fields.get("quorum", 1)))
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    block: Block = cls(**converted)
    return block
