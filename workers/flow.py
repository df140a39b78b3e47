"""What a step's answer means for its workflow: hand it on, return it to a chord, end the task,
delegate, revise, or fan out (and whether a human must look at it).

Each step carries `StepOptions` saying its place in the workflow: its role in its block and
what to emit. Nothing here knows an agent by name; blocks name their agents in the options.
Every message a step causes has an id derived from the step's input message id and its
purpose, so a replayed step causes the very same messages (see `continuation_of`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from messages import AgentMessage, ErrorCode, MessageType, TaskRequest
from messages.envelope import PRODUCER, derived_id
from messages.errors import ChorusError
from messages.status import TaskStatus

Role = Literal["work", "route", "critic", "plan", "merge", "judge"]
Emit = Literal["final", "handoff", "branch"]


class StepOptions(BaseModel):
    """A step's place in its workflow; travels as the Celery kwarg `options` (plain JSON)."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = ""
    pattern: str = "step"
    """The kind of block the step belongs to, for the trace."""
    role: Role = "work"
    emit: Emit = "final"
    """final: the task's answer; branch: an answer for the chord; handoff: for the next step."""
    adopt: str | None = None
    """The received message is an earlier step's: the step's own input is derived from it."""
    instructions: str | None = None
    branch: str | None = None
    forward_to: str | None = None
    """Recipient of the hand-off (the next block's first agent)."""
    then: dict[str, Any] | None = None
    """A block (blocks.to_data) that starts from this step's hand-off (a fan-out mid-pipeline)."""
    path: str = "w"
    """Position in the workflow, so derived message ids differ between positions."""
    priority: int | None = None
    batch: bool = False
    targets: list[str] | None = None
    reviser: str | None = None
    critic: str | None = None
    worker: str | None = None
    synthesizer: str | None = None
    branches: list[str] | None = None
    """Aggregators: names of the chord's branches, in header order."""
    quorum: int = Field(default=1, ge=0)
    """Aggregators: valid branch answers needed before the model is called at all."""
    review_below: float | None = None
    round: int = Field(default=1, ge=1)
    max_rounds: int = Field(default=1, ge=1)
    max_subtasks: int = Field(default=5, ge=1, le=10)


class StepFailed(ChorusError):
    """Ends a step with an error result carrying `code`."""

    def __init__(self, code: ErrorCode, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.replies: tuple[Any, ...] = ()
        self.retries: tuple[Any, ...] = ()


@dataclass(frozen=True)
class StepResult:
    message: AgentMessage
    final_status: str | None = None
    """done / needs_review when this step ends the task successfully; None otherwise."""


# -- input ----------------------------------------------------------------------------------


def adopted(received: AgentMessage, agent: str, options: StepOptions) -> AgentMessage:
    """This step's own input, derived from an earlier step's hand-off (or a fan-out's base)."""
    request = TaskRequest.model_validate(received.payload)
    context = dict(request.context)
    if options.branch:
        context["branch"] = options.branch
    payload = TaskRequest(
        text=request.text,
        instructions=options.instructions or request.instructions,
        context=context,
    )
    return received.child(
        sender=received.sender,
        recipient=agent,
        payload=payload.model_dump(),
        purpose=f"adopt:{options.adopt}",
    )


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
    context = {k: v for k, v in request.context.items() if k != "branch"}
    return request.model_copy(update={"context": {**context, "branches": branches}})


def output_model(model: type[BaseModel], options: StepOptions) -> type[BaseModel]:
    if options.role == "plan":
        return _bounded_plan(model, options.max_subtasks)
    return model


@functools.lru_cache(maxsize=64)
def _bounded_plan(model: type[BaseModel], max_subtasks: int) -> type[BaseModel]:
    """The bound on parallel workers is configuration, so it is part of the schema."""
    item: Any = model.model_fields["subtasks"].annotation
    bounded: type[BaseModel] = create_model(
        model.__name__,
        __base__=model,
        subtasks=(item, Field(min_length=1, max_length=max_subtasks)),
    )
    return bounded


# -- output ---------------------------------------------------------------------------------


def next_step(
    agent: str,
    incoming: AgentMessage,
    request: TaskRequest,
    output: BaseModel,
    options: StepOptions,
) -> StepResult:
    answer = output.model_dump(mode="json")
    if options.role == "route":
        return _delegate(agent, incoming, request, answer, options)
    if options.role == "plan":
        return _plan(agent, incoming, request, answer, options)
    if options.role == "critic":
        return _critique(agent, incoming, request, answer, options)
    result = emit(agent, incoming, request, answer, options)
    done = result.final_status == TaskStatus.DONE
    if options.role == "judge" and done and needs_review(answer, options):
        return StepResult(result.message, TaskStatus.NEEDS_REVIEW)
    return result


def emit(
    agent: str,
    incoming: AgentMessage,
    request: TaskRequest,
    answer: dict[str, Any],
    options: StepOptions,
) -> StepResult:
    """The step's answer as its options ask: the task's answer, a branch's, or a hand-off."""
    if options.emit == "handoff":
        payload = handoff(request, agent, answer)
        message = incoming.child(
            sender=agent,
            recipient=options.forward_to or agent,
            payload=payload.model_dump(),
            purpose="out",
        )
        return StepResult(message)
    message = incoming.child(
        sender=agent,
        recipient=PRODUCER,
        payload=answer,
        message_type=MessageType.RESULT,
        purpose="out",
    )
    return StepResult(message, TaskStatus.DONE if options.emit == "final" else None)


def needs_review(judgement: dict[str, Any], options: StepOptions) -> bool:
    confidence = float(judgement.get("confidence", 1.0))
    low = options.review_below is not None and confidence < options.review_below
    return judgement.get("consensus") == "SPLIT" or low


def handoff(request: TaskRequest, agent: str, answer: dict[str, Any]) -> TaskRequest:
    context = {k: v for k, v in request.context.items() if k not in ("branches", "branch")}
    context[agent] = answer
    return TaskRequest(text=request.text, context=context)


def _delegate(
    agent: str,
    incoming: AgentMessage,
    request: TaskRequest,
    decision: dict[str, Any],
    options: StepOptions,
) -> StepResult:
    target = str(decision.get("agent"))
    targets = options.targets or []
    if target not in targets:
        raise StepFailed(
            ErrorCode.UNKNOWN_AGENT,
            f"router chose {target!r}, which is not one of {', '.join(targets)}",
            agent=target,
        )
    payload = TaskRequest(
        text=request.text,
        instructions=request.instructions,
        context={**request.context, "route": decision},
    )
    message = incoming.child(
        sender=agent, recipient=target, payload=payload.model_dump(), purpose="delegate"
    )
    return StepResult(message)


def _plan(
    agent: str,
    incoming: AgentMessage,
    request: TaskRequest,
    plan: dict[str, Any],
    options: StepOptions,
) -> StepResult:
    payload = TaskRequest(
        text=request.text,
        instructions="Combine the workers' results.",
        context={**request.context, "plan": plan},
    )
    message = incoming.child(
        sender=agent,
        recipient=options.synthesizer or agent,
        payload=payload.model_dump(),
        purpose="plan",
    )
    return StepResult(message)


def _critique(
    agent: str,
    incoming: AgentMessage,
    request: TaskRequest,
    critique: dict[str, Any],
    options: StepOptions,
) -> StepResult:
    reviser = options.reviser or ""
    draft = request.context.get(reviser)
    if critique.get("verdict") == "revise" and options.round < options.max_rounds:
        payload = handoff(request, agent, critique)
        payload.instructions = "Revise the draft to answer the critique."
        message = incoming.child(
            sender=agent, recipient=reviser, payload=payload.model_dump(), purpose="revise"
        )
        return StepResult(message)
    final = {
        "draft": draft,
        "critique": critique,
        "rounds": options.round,
        "accepted": critique.get("verdict") == "pass",
    }
    return emit(agent, incoming, request, final, options)


# -- what a step starts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Continuation:
    """Work a step adds to its own workflow (the task layer turns it into a canvas)."""

    kind: Literal["delegate", "revise", "fan_out", "then"]
    message: AgentMessage
    """The step's output: the message the next agent (or the chord's body) receives."""


def continuation_of(
    input_message_id: str, out: AgentMessage, options: StepOptions
) -> Continuation | None:
    """What `out` starts, from the message alone, so a replayed step starts the same thing.

    None for answers and for plain hand-offs (a chain's next link takes those as they are).
    """
    if out.message_type is not MessageType.TASK:
        return None
    for kind in ("delegate", "revise"):
        if out.message_id == derived_id(input_message_id, kind):
            return Continuation(kind, out)
    if out.message_id == derived_id(input_message_id, "plan"):
        return Continuation("fan_out", out)
    if options.then is not None:
        return Continuation("then", out)
    return None


def planned_subtasks(message: AgentMessage) -> list[tuple[str, str]]:
    """(name, instructions) of each subtask of the plan a planner's hand-off carries."""
    plan = TaskRequest.model_validate(message.payload).context.get("plan") or {}
    return [
        (str(item.get("name", "subtask")), str(item.get("instructions", "")))
        for item in plan.get("subtasks", [])
        if isinstance(item, dict)
    ]
