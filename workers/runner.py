"""The one runner every agent task goes through.

Phases: decode → admit (recipient, depth, redelivery) → call Claude → validate → build the
output message → record state. Every failure becomes an explicit error message and a dead
letter; nothing here lets an exception crash the worker or silently drop the task.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from messages import AgentMessage, ErrorCode, ErrorPayload, MessageType, RouteDecision, TaskRequest
from messages.envelope import ID_PATTERN, PRODUCER
from workers.claude import Reply
from workers.models import cost_micro_usd
from workers.registry import AGENTS, ROUTER_TARGETS, AgentSpec
from workers.retry import ModelCallError, RetryEvent
from workers.runtime import Runtime
from workers.state import StepRecord, utc_iso

log = logging.getLogger(__name__)

UNKNOWN_TASK = "unknown"


@dataclass(frozen=True)
class Delivery:
    """Where the message was picked up, for the trace."""

    queue: str | None = None
    worker: str | None = None
    priority: int | None = None
    in_chord: bool = False


@dataclass(frozen=True)
class Outcome:
    message: AgentMessage
    record: StepRecord

    @property
    def delegate_to(self) -> str | None:
        """The agent to continue with, when the step delegated instead of answering."""
        if self.message.message_type is MessageType.TASK:
            return self.message.recipient
        return None


class StepFailed(Exception):
    """Internal control flow: ends a step with an error result carrying `code`."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        replies: tuple[Reply, ...] = (),
        retries: tuple[RetryEvent, ...] = (),
        **detail: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.replies = replies
        """Model calls already made (and paid for) before the step failed."""
        self.retries = retries
        """Retries of the call that finally failed (those of earlier replies are on them)."""


def run_agent(
    runtime: Runtime, spec: AgentSpec, raw: object, delivery: Delivery, *, final: bool
) -> Outcome:
    """Handle one delivered message for `spec`; always returns an output message."""
    started_at, t0 = utc_iso(), time.perf_counter()
    try:
        incoming = AgentMessage.from_dict(raw)
    except ValueError as exc:
        return _reject_undecodable(runtime, spec, raw, str(exc), delivery, started_at)

    state = runtime.state
    done = state.begin_step(incoming.task_id, incoming.message_id)
    if done is not None:
        log.info("message %s already handled; returning the stored result", incoming.message_id)
        return Outcome(AgentMessage.from_dict(done.message), done)

    replies: tuple[Reply, ...] = ()
    failed_retries: tuple[RetryEvent, ...] = ()
    try:
        request = _admit(runtime, spec, incoming)
        output, replies = _call(runtime, spec, request, incoming.task_id)
        message = _output_message(spec, incoming, request, output)
        status = "ok"
    except StepFailed as exc:
        replies = exc.replies or replies
        failed_retries = exc.retries
        message = _error_message(spec, incoming, exc, replies)
        status = "error"
    except Exception as exc:  # a bug must still end the task explicitly
        log.exception("agent %s failed on message %s", spec.name, incoming.message_id)
        failure = StepFailed(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        message = _error_message(spec, incoming, failure, replies)
        status = "error"

    retries = tuple(event for reply in replies for event in reply.retries) + failed_retries
    if retries:
        message = message.model_copy(update={"retry_count": len(retries)})
    record = StepRecord(
        task_id=incoming.task_id,
        input_message_id=incoming.message_id,
        agent=spec.name,
        status=status,
        message=message.to_dict(),
        queue=delivery.queue,
        worker=delivery.worker,
        priority=delivery.priority,
        model=replies[-1].model if replies else None,
        attempts=len(replies),
        retries=len(retries),
        retry_log=[asdict(event) for event in retries],
        usage=_sum_usage(replies),
        cost_micro_usd=sum(cost_micro_usd(r.usage, runtime.prices[r.model]) for r in replies),
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        raw_output=replies[-1].raw_text if replies else None,
        started_at=started_at,
        finished_at=utc_iso(),
    )
    final_status = _final_status(status, final=final, delivery=delivery, message=message)
    stored = state.record_step(record, final_status=final_status)
    if stored is not record:  # a concurrent redelivery won the race: its result stands
        return Outcome(AgentMessage.from_dict(stored.message), stored)
    if status == "error":
        _dead_letter(runtime, spec, incoming.to_dict(), message)
    return Outcome(message, record)


# -- phases ---------------------------------------------------------------------------------


def _admit(runtime: Runtime, spec: AgentSpec, incoming: AgentMessage) -> TaskRequest:
    if incoming.recipient != spec.name:
        raise StepFailed(
            ErrorCode.WRONG_RECIPIENT,
            f"message for {incoming.recipient!r} was delivered to agent {spec.name!r}",
        )
    if incoming.message_type is not MessageType.TASK:
        raise StepFailed(
            ErrorCode.INVALID_MESSAGE,
            f"agent {spec.name!r} takes messages of type 'task', got {incoming.message_type!r}",
        )
    limit = runtime.settings.max_depth
    if incoming.depth >= limit:
        raise StepFailed(
            ErrorCode.DEPTH_EXCEEDED,
            f"delegation depth {incoming.depth} reached the limit of {limit} "
            "(CHORUS_MAX_DEPTH); the task stops here instead of delegating further",
            depth=incoming.depth,
            max_depth=limit,
        )
    try:
        return TaskRequest.model_validate(incoming.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "<payload>"
        raise StepFailed(
            ErrorCode.INVALID_MESSAGE, f"payload field {field!r}: {first['msg']}"
        ) from None


def _call(
    runtime: Runtime, spec: AgentSpec, request: TaskRequest, task_id: str
) -> tuple[BaseModel, tuple[Reply, ...]]:
    try:
        result = runtime.claude.structured(
            model=runtime.settings.model_for(spec.tier),
            system=spec.system_prompt,
            user_blocks=_prompt(request),
            output_model=spec.output_model,
            max_tokens=spec.max_tokens,
            user_id=task_id,
        )
    except ModelCallError as exc:
        raise StepFailed(
            ErrorCode.MODEL_ERROR,
            str(exc),
            replies=cast(tuple[Reply, ...], exc.replies),
            retries=exc.retries,
            http_status=exc.status,
        ) from None
    if result.output is None:
        code = ErrorCode.INVALID_OUTPUT
        if spec.name == "router" and result.error_fields == ("agent",):
            code = ErrorCode.UNKNOWN_AGENT
        raise StepFailed(
            code, f"model output rejected twice: {result.error}", replies=result.replies
        )
    return result.output, result.replies


def _output_message(
    spec: AgentSpec, incoming: AgentMessage, request: TaskRequest, output: BaseModel
) -> AgentMessage:
    if isinstance(output, RouteDecision):
        decision = check_route(output)
        payload = TaskRequest(
            text=request.text,
            instructions=request.instructions,
            context={**request.context, "route": decision.model_dump()},
        )
        return incoming.child(
            sender=spec.name, recipient=decision.agent, payload=payload.model_dump()
        )
    return incoming.child(
        sender=spec.name,
        recipient=PRODUCER,
        payload=output.model_dump(mode="json"),
        message_type=MessageType.RESULT,
    )


def check_route(decision: RouteDecision) -> RouteDecision:
    """Model output never names an agent outside the registry's router targets."""
    if decision.agent not in ROUTER_TARGETS or decision.agent not in AGENTS:
        raise StepFailed(
            ErrorCode.UNKNOWN_AGENT,
            f"router chose {decision.agent!r}, which is not one of {', '.join(ROUTER_TARGETS)}",
            agent=decision.agent,
        )
    return decision


def _prompt(request: TaskRequest) -> list[str]:
    """The request first, then guidance and earlier results as separate text blocks."""
    blocks = [request.text]
    if request.instructions:
        blocks.append(f"Instructions: {request.instructions}")
    blocks.extend(
        f"Context from {name}: {json.dumps(value)}" for name, value in request.context.items()
    )
    return blocks


# -- errors ---------------------------------------------------------------------------------


def _error_message(
    spec: AgentSpec, incoming: AgentMessage, failure: StepFailed, replies: tuple[Reply, ...]
) -> AgentMessage:
    payload = ErrorPayload(
        code=failure.code,
        message=str(failure),
        agent=spec.name,
        detail=failure.detail,
        raw_output=replies[-1].raw_text if replies else None,
    )
    return incoming.child(
        sender=spec.name,
        recipient=PRODUCER,
        payload=payload.model_dump(mode="json"),
        message_type=MessageType.ERROR,
    )


def _reject_undecodable(
    runtime: Runtime,
    spec: AgentSpec,
    raw: object,
    reason: str,
    delivery: Delivery,
    started_at: str,
) -> Outcome:
    """An invalid envelope has no trustworthy lineage: answer with a fresh error root."""
    task_id = _usable_id(raw, "task_id") or UNKNOWN_TASK
    payload = ErrorPayload(code=ErrorCode.INVALID_MESSAGE, message=reason, agent=spec.name)
    message = AgentMessage.create(
        task_id=task_id,
        sender=spec.name,
        recipient=PRODUCER,
        message_type=MessageType.ERROR,
        payload=payload.model_dump(mode="json"),
    )
    record = StepRecord(
        task_id=task_id,
        input_message_id=_usable_id(raw, "message_id") or message.message_id,
        agent=spec.name,
        status="error",
        message=message.to_dict(),
        queue=delivery.queue,
        worker=delivery.worker,
        started_at=started_at,
        finished_at=utc_iso(),
    )
    if task_id != UNKNOWN_TASK:
        final = None if delivery.in_chord else "failed"
        record = runtime.state.record_step(record, final_status=final)
    _dead_letter(runtime, spec, raw, message)
    return Outcome(AgentMessage.from_dict(record.message), record)


def _usable_id(raw: object, field: str) -> str | None:
    """An id from an invalid message, if it is at least a well-formed id."""
    value = raw.get(field) if isinstance(raw, dict) else None
    return value if isinstance(value, str) and re.fullmatch(ID_PATTERN, value) else None


def _dead_letter(runtime: Runtime, spec: AgentSpec, body: object, error: AgentMessage) -> None:
    runtime.state.dead_letter(
        task_id=error.task_id,
        agent=spec.name,
        code=str(error.payload.get("code")),
        error=str(error.payload.get("message")),
        body=body,
    )


def _final_status(
    status: str, *, final: bool, delivery: Delivery, message: AgentMessage
) -> str | None:
    if status == "error":
        # Inside a chord the aggregating step decides; elsewhere an error ends the task.
        return None if delivery.in_chord else "failed"
    if final and message.message_type is MessageType.RESULT:
        return "done"
    return None


def _sum_usage(replies: tuple[Reply, ...]) -> dict[str, int]:
    total = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    for reply in replies:
        for key in total:
            total[key] += getattr(reply.usage, key)
    return total
