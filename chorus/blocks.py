"""The building blocks users compose workflows from, over their own agents.

A string where a block is expected is a one-agent step. Blocks nest: a pipeline step may be a
fan-out, a fan-out branch may be a pipeline. Arguments are checked here; whether the named
agents exist and fit their roles is checked when the app loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chorus.errors import AppDefinitionError
from workers.blocks import (
    Block,
    Branch,
    Consensus,
    Evaluate,
    Fanout,
    Orchestrate,
    Pipeline,
    Route,
    Step,
)

MAX_BRANCHES = 64


def as_block(value: Block | str) -> Block:
    if isinstance(value, str):
        return Step(value)
    if isinstance(value, Step | Pipeline | Fanout | Route | Consensus | Evaluate | Orchestrate):
        return value
    raise AppDefinitionError(f"not a workflow block: {value!r} (an agent name or a chorus block)")


def step(agent: str, instructions: str | None = None) -> Step:
    """One agent, optionally with instructions of its own."""
    return Step(agent, instructions)


def pipeline(*steps: Block | str) -> Pipeline:
    """Steps in order; each sees the request and every earlier step's answer."""
    if not steps:
        raise AppDefinitionError("a pipeline needs at least one step")
    flat: list[Block] = []
    for item in steps:
        block = as_block(item)
        flat.extend(block.steps if isinstance(block, Pipeline) else (block,))
    return Pipeline(tuple(flat))


def fanout(
    branches: Mapping[str, str | Block] | Sequence[Block | str],
    *,
    merge: str,
    agent: str | None = None,
    quorum: int = 1,
) -> Fanout:
    """Branches in parallel, then `merge` sees each branch's answer (or failure).

    `{"email": "Write the email.", ...}` with `agent="writer"` runs the writer once per branch
    with those instructions; a branch may also be an agent name or a block (a pipeline).
    """
    if isinstance(branches, Mapping):
        items = list(branches.items())
    else:
        items = [(f"branch_{i + 1}", value) for i, value in enumerate(branches)]
    if not items:
        raise AppDefinitionError("a fan-out needs at least one branch")
    if len(items) > MAX_BRANCHES:
        raise AppDefinitionError(f"a fan-out takes at most {MAX_BRANCHES} branches")
    built = []
    for name, value in items:
        if isinstance(value, str) and agent is not None:
            block: Block = Step(agent, value)
        elif isinstance(value, str):
            block = Step(value)
        else:
            block = as_block(value)
        if isinstance(block, Fanout | Consensus):
            raise AppDefinitionError(
                f"fan-out branch {name!r} is itself a {type(block).__name__.lower()}: start it "
                "from a step, e.g. pipeline('agent', fanout(...))"
            )
        built.append(Branch(str(name), block))
    if not 1 <= quorum <= len(built):
        raise AppDefinitionError("quorum must be between 1 and the number of branches")
    return Fanout(tuple(built), merge, quorum)


def route(targets: Sequence[str], *, router: str = "router") -> Route:
    """`router` (a fast model; declared for you when you don't) picks one of `targets`."""
    names = tuple(targets)
    if not names:
        raise AppDefinitionError("a route needs at least one target")
    if len(set(names)) != len(names):
        raise AppDefinitionError(f"route targets repeat a name: {', '.join(names)}")
    if router in names:
        raise AppDefinitionError(f"the router {router!r} cannot be one of its own targets")
    return Route(names, router)


def consensus(
    agent: str,
    judge: str,
    *,
    perspectives: int | Sequence[str] = 3,
    quorum: int | None = None,
    review_below: float | None = 0.6,
) -> Consensus:
    """`agent` votes once per perspective; `judge` states the consensus or SPLIT.

    A split (or a judgement under `review_below` confidence) goes to human review.
    """
    if isinstance(perspectives, int):
        count = perspectives
        views = tuple(
            f"You are analyst {i + 1} of {count}: judge it independently, on your own."
            for i in range(count)
        )
    else:
        views = tuple(perspectives)
    if not 1 <= len(views) <= MAX_BRANCHES:
        raise AppDefinitionError(f"a consensus needs between 1 and {MAX_BRANCHES} analysts")
    needed = quorum if quorum is not None else len(views) // 2 + 1
    if not 1 <= needed <= len(views):
        raise AppDefinitionError("quorum must be between 1 and the number of analysts")
    if review_below is not None and not 0 <= review_below <= 1:
        raise AppDefinitionError("review_below is a confidence between 0 and 1")
    return Consensus(agent, judge, views, needed, review_below)


def evaluate(agent: str, critic: str, *, max_rounds: int = 2) -> Evaluate:
    """`agent` drafts, `critic` answers pass or revise, for up to `max_rounds` drafts."""
    if max_rounds < 1:
        raise AppDefinitionError("max_rounds must be at least 1")
    return Evaluate(agent, critic, max_rounds)


def orchestrate(
    planner: str, worker: str, synthesizer: str, *, max_subtasks: int = 5
) -> Orchestrate:
    """`planner` splits the request at run time into up to `max_subtasks` parts for `worker`;
    `synthesizer` combines their results."""
    if not 1 <= max_subtasks <= 10:
        raise AppDefinitionError("max_subtasks must be between 1 and 10")
    return Orchestrate(planner, worker, synthesizer, max_subtasks)
