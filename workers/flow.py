"""What a step's answer means for the workflow: forward it, aggregate branches, delegate,
revise, fan out, or finish (and whether a human must look at it).

The dispatcher builds the canvas; each step carries `StepOptions` saying its place in it. This
module turns a validated model answer into the step's output message and, where the workflow
grows at run time (routing, revision rounds, orchestration), a continuation for the task layer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from messages import (
    AgentMessage,
    Critique,
    Draft,
    ErrorCode,
    EvaluatedDraft,
    Judgement,
    MessageType,
    Plan,
    RouteDecision,
    TaskRequest,
)
from messages.envelope import PRODUCER
from messages.payloads import Subtask
from workers.registry import AGENTS, ROUTER_TARGETS, AgentSpec


class StepOptions(BaseModel):
    """A step's place in its workflow; travels as the Celery kwarg `options` (plain JSON)."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = "route"
    final: bool = True
    """The step's answer is the task's answer (sets the task's terminal status)."""
    forward_to: str | None = None
    """Pipeline: hand the answer to this agent instead of the producer."""
    next_instructions: str | None = None
    branches: list[str] | None = None
    """Aggregators: names of the chord's branches, in header order."""
    quorum: int = Field(default=1, ge=0)
    """Aggregators: valid branch answers needed before the model is called at all."""
    review_below: float | None = None
    """Judge: confidence under which the task goes to human review."""
    round: int = Field(default=1, ge=1)
    max_rounds: int = Field(default=1, ge=1)
    """Evaluator-optimizer: revision rounds allowed."""
    max_subtasks: int = Field(default=5, ge=1, le=10)


class StepFailed(Exception):
    """Ends a step with an error result carrying `code`."""

    def __init__(self, code: ErrorCode, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.replies: tuple[Any, ...] = ()
        self.retries: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Continuation:
    """Work the step adds to its own workflow (the task layer turns it into a canvas)."""

    kind: Literal["delegate", "revise", "fan_out"]
    message: AgentMessage
    """The step's output: the message the next agent (or the chord's body) receives."""
    priority: str | None = None
    subtasks: tuple[Subtask, ...] = ()
    options: StepOptions | None = None


@dataclass(frozen=True)
class StepResult:
    message: AgentMessage
    continuation: Continuation | None = None
    final_status: str | None = None
    """done / needs_review when this step ends the task successfully; None otherwise."""


# -- input ----------------------------------------------------------------------------------


def branch_status(results: list[Any], options: StepOptions) -> list[dict[str, str]]:
    """Name and outcome of each branch, for the trace."""
    names = options.branches or [f"branch_{i + 1}" for i in range(len(results))]
    statuses = []
    for name, raw in zip(names, results, strict=False):
        ok = isinstance(raw, dict) and raw.get("message_type") == MessageType.RESULT
        statuses.append({"name": name, "status": "ok" if ok else "error"})
    return statuses


def gather(request: TaskRequest, results: list[Any], options: StepOptions) -> TaskRequest:
    """Put the branch answers (and failures) into the context; enforce the quorum."""
    names = options.branches or [f"branch_{i + 1}" for i in range(len(results))]
    branches: list[dict[str, Any]] = []
    failed: list[str] = []
    for name, raw in zip(names, results, strict=False):
        try:
            answer = AgentMessage.from_dict(raw)
        except ValueError as exc:
            branches.append({"name": name, "status": "error", "error": str(exc)})
            failed.append(f"{name}: {exc}")
            continue
        if answer.message_type is MessageType.RESULT:
            branches.append({"name": name, "status": "ok", "answer": answer.payload})
        else:
            error = answer.payload.get("message", "no answer")
            branches.append({"name": name, "status": "error", "error": error})
            failed.append(f"{name}: {answer.payload.get('code')}: {error}")
    valid = sum(1 for b in branches if b["status"] == "ok")
    if valid < options.quorum:
        raise StepFailed(
            ErrorCode.QUORUM_NOT_MET,
            f"only {valid} of {len(names)} branches answered; {options.quorum} needed. "
            f"Failed: {'; '.join(failed) or 'none'}",
            valid=valid,
            needed=options.quorum,
            failed=failed,
        )
    return request.model_copy(update={"context": {**request.context, "branches": branches}})


def output_model(spec: AgentSpec, options: StepOptions) -> type[BaseModel]:
    if spec.output_model is Plan:
        return _bounded_plan(options.max_subtasks)
    return spec.output_model


@functools.lru_cache(maxsize=16)
def _bounded_plan(max_subtasks: int) -> type[Plan]:
    """The bound on parallel workers is configuration, so it is part of the schema."""
    return create_model(
        "Plan",
        __base__=Plan,
        subtasks=(list[Subtask], Field(min_length=1, max_length=max_subtasks)),
    )


# -- output ---------------------------------------------------------------------------------


def next_step(
    spec: AgentSpec,
    incoming: AgentMessage,
    request: TaskRequest,
    output: BaseModel,
    options: StepOptions,
) -> StepResult:
    if isinstance(output, RouteDecision):
        return _delegate(spec, incoming, request, output)
    if isinstance(output, Plan):
        return _fan_out(spec, incoming, request, output, options)
    if isinstance(output, Critique) and options.pattern == "evaluate":
        return _evaluate(spec, incoming, request, output, options)
    if options.forward_to:
        handoff = _handoff(request, spec.name, output, options.next_instructions)
        message = incoming.child(
            sender=spec.name, recipient=options.forward_to, payload=handoff.model_dump()
        )
        return StepResult(message)
    message = _result(spec, incoming, output.model_dump(mode="json"))
    status = "done" if options.final else None
    if isinstance(output, Judgement) and options.final and _needs_review(output, options):
        status = "needs_review"
    return StepResult(message, final_status=status)


def _needs_review(judgement: Judgement, options: StepOptions) -> bool:
    low = options.review_below is not None and judgement.confidence < options.review_below
    return judgement.consensus == "SPLIT" or low


def _result(spec: AgentSpec, incoming: AgentMessage, payload: dict[str, Any]) -> AgentMessage:
    return incoming.child(
        sender=spec.name, recipient=PRODUCER, payload=payload, message_type=MessageType.RESULT
    )


def _handoff(
    request: TaskRequest, name: str, output: BaseModel, instructions: str | None
) -> TaskRequest:
    context = {k: v for k, v in request.context.items() if k != "branches"}
    context[name] = output.model_dump(mode="json")
    return TaskRequest(text=request.text, instructions=instructions, context=context)


def _delegate(
    spec: AgentSpec, incoming: AgentMessage, request: TaskRequest, decision: RouteDecision
) -> StepResult:
    if decision.agent not in ROUTER_TARGETS or decision.agent not in AGENTS:
        raise StepFailed(
            ErrorCode.UNKNOWN_AGENT,
            f"router chose {decision.agent!r}, which is not one of {', '.join(ROUTER_TARGETS)}",
            agent=decision.agent,
        )
    payload = TaskRequest(
        text=request.text,
        instructions=request.instructions,
        context={**request.context, "route": decision.model_dump()},
    )
    message = incoming.child(
        sender=spec.name, recipient=decision.agent, payload=payload.model_dump()
    )
    return StepResult(message, Continuation("delegate", message, priority=decision.priority))


def _evaluate(
    spec: AgentSpec,
    incoming: AgentMessage,
    request: TaskRequest,
    critique: Critique,
    options: StepOptions,
) -> StepResult:
    draft = Draft.model_validate(request.context.get("drafter"))
    if critique.verdict == "revise" and options.round < options.max_rounds:
        handoff = _handoff(request, spec.name, critique, "Revise the draft to answer the critique.")
        handoff.context["drafter"] = draft.model_dump()
        message = incoming.child(
            sender=spec.name, recipient="drafter", payload=handoff.model_dump()
        )
        later = options.model_copy(update={"round": options.round + 1})
        return StepResult(message, Continuation("revise", message, options=later))
    final = EvaluatedDraft(
        draft=draft,
        critique=critique,
        rounds=options.round,
        accepted=critique.verdict == "pass",
    )
    return StepResult(
        _result(spec, incoming, final.model_dump(mode="json")),
        final_status="done" if options.final else None,
    )


def _fan_out(
    spec: AgentSpec,
    incoming: AgentMessage,
    request: TaskRequest,
    plan: Plan,
    options: StepOptions,
) -> StepResult:
    payload = TaskRequest(
        text=request.text,
        instructions="Combine the workers' results.",
        context={**request.context, "plan": plan.model_dump()},
    )
    message = incoming.child(
        sender=spec.name, recipient="synthesizer", payload=payload.model_dump()
    )
    return StepResult(
        message, Continuation("fan_out", message, subtasks=tuple(plan.subtasks), options=options)
    )
