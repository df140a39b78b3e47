"""A workflow's block, with the per-request options `submit` and `chorus run` take.

`submit(text, workflow="consensus", analysts=5)` runs the app's `consensus` workflow with five
analysts; each option applies to one kind of block and is refused, naming the options that
kind takes, anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from messages import ChorusError
from workers.blocks import (
    Block,
    Branch,
    Consensus,
    Evaluate,
    Fanout,
    Orchestrate,
    Pipeline,
    Step,
    kind,
)

OPTIONS: dict[str, tuple[str, ...]] = {
    "pipeline": ("steps",),
    "fanout": ("aspects", "quorum"),
    "consensus": ("analysts", "quorum", "review_below"),
    "evaluate": ("max_rounds",),
    "orchestrate": ("max_subtasks",),
}
"""Per-request options each kind of block takes."""


class PatternOptionError(ChorusError):
    """An option the workflow's block does not take, or a value out of its range."""


def customise(block: Block, **options: Any) -> Block:
    """`block` with per-request options applied (none: the block as declared)."""
    options = {k: v for k, v in options.items() if v is not None}
    if not options:
        return block
    name = kind(block)
    takes = OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(takes))
    if unknown:
        offered = ", ".join(takes) if takes else "no options"
        raise PatternOptionError(
            f"option(s) {', '.join(unknown)} do not apply to a {name} workflow (it takes {offered})"
        )
    if isinstance(block, Pipeline):
        return _steps(options["steps"])
    if isinstance(block, Fanout):
        return _fanout(block, options)
    if isinstance(block, Consensus):
        return _consensus(block, options)
    if isinstance(block, Evaluate):
        rounds = int(options["max_rounds"])
        if rounds < 1:
            raise PatternOptionError("max_rounds must be at least 1")
        return replace(block, max_rounds=rounds)
    assert isinstance(block, Orchestrate)
    bound = int(options["max_subtasks"])
    if not 1 <= bound <= 10:
        raise PatternOptionError("max_subtasks must be between 1 and 10")
    return replace(block, max_subtasks=bound)


def _steps(steps: Sequence[str]) -> Pipeline:
    names = [str(step) for step in steps]
    if not names:
        raise PatternOptionError("a pipeline needs at least one step")
    return Pipeline(tuple(Step(name) for name in names))


def _fanout(block: Fanout, options: dict[str, Any]) -> Fanout:
    if "aspects" in options:
        aspects = [(str(name), str(text)) for name, text in options["aspects"]]
        if not aspects:
            raise PatternOptionError("a fan-out needs at least one aspect (name, instructions)")
        first = block.branches[0].block
        if not isinstance(first, Step):
            raise PatternOptionError("aspects replace one-agent branches only")
        branches = tuple(Branch(name, Step(first.agent, text)) for name, text in aspects)
        block = replace(block, branches=branches, quorum=min(block.quorum, len(branches)))
    quorum = int(options.get("quorum", block.quorum))
    if not 1 <= quorum <= len(block.branches):
        raise PatternOptionError("quorum must be between 1 and the number of branches")
    return replace(block, quorum=quorum)


def _consensus(block: Consensus, options: dict[str, Any]) -> Consensus:
    views = block.perspectives
    if "analysts" in options:
        count = int(options["analysts"])
        if not 1 <= count <= 64:
            raise PatternOptionError("analysts must be between 1 and 64")
        generic = tuple(
            f"You are analyst {i + 1} of {count}: judge it independently, on your own."
            for i in range(len(views), count)
        )
        views = (views + generic)[:count]
    quorum = int(options.get("quorum", min(block.quorum, len(views))))
    if not 1 <= quorum <= len(views):
        raise PatternOptionError("quorum must be between 1 and the number of analysts")
    review_below = options.get("review_below", block.review_below)
    return replace(block, perspectives=views, quorum=quorum, review_below=review_below)
