"""The one runner every agent task goes through.

Phases: decode → admit (recipient, depth, redelivery) → call Claude → validate → build the
output message → record state. Every failure becomes an explicit error message and a dead
letter; nothing here lets an exception crash the worker or silently drop the task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from messages import AgentMessage, ChorusError, ErrorCode, ErrorPayload, MessageType, TaskRequest
from messages.envelope import ID_PATTERN, PRODUCER
from messages.status import TaskStatus
from workers import guards
from workers.batching import (
    BatchedCall,
    batched_calls,
    batched_structured,
    reply_price,
    wants_batch,
)
from workers.claude import Reply, StructuredResult, schema_text
from workers.deadletters import DeadLetter
from workers.documents import load_documents
from workers.flow import (
    StepFailed,
    StepOptions,
    StepResult,
    adopted,
    branch_status,
    gather,
    next_step,
    output_model,
)
from workers.guards import BudgetExceededError, Hold, StepGuard
from workers.journal import Journal
from workers.models import Price, cost_micro_usd
from workers.registry import AgentSpec
from workers.retry import ModelCallError, RetryEvent
from workers.runtime import Runtime
from workers.state import StepRecord, digest, utc_iso
from workers.tool_loop import (
    LoopPlan,
    LoopResult,
    ToolLimitError,
    ToolLog,
    first_message,
    resolve_tools,
    run_tool_loop,
    sized_blocks,
    tool_definitions,
)

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
    record: StepRecord | None
    """None when the step passed an earlier error through without doing anything."""
    input_message_id: str = ""
    """The step's own input (derived from the received one when the step adopts it)."""
    replayed: bool = False
    """The input was handled before (a redelivery): `message` is the stored answer."""


def run_agent(
    runtime: Runtime,
    spec: AgentSpec,
    received: object,
    delivery: Delivery,
    *,
    message: object = None,
    options: object = None,
) -> Outcome:
    """Handle one delivery for `spec`; always returns an output message.

    `received` is the message for this agent, or (for a chord's body) the list of branch
    answers, in which case `message` is the one addressed to this agent.
    """
    started_at, t0 = utc_iso(), time.perf_counter()
    gathered = received if isinstance(received, list) else None
    raw = message if gathered is not None else received
    try:
        incoming = AgentMessage.from_dict(raw)
        plan = StepOptions.model_validate(options or {})
    except ValueError as exc:
        return _reject_undecodable(runtime, spec, raw, str(exc), delivery, started_at)
    if incoming.message_type is MessageType.ERROR and gathered is None:
        # An earlier step failed: pass its error on, untouched.
        return Outcome(incoming, None, incoming.message_id)
    if plan.adopt is not None:
        try:
            incoming = adopted(incoming, spec.name, plan)
        except ValueError as exc:
            return _reject_undecodable(runtime, spec, raw, str(exc), delivery, started_at)

    state = runtime.state
    # Admission is checked before the step begins, so the first call's budget hold can go
    # with the begin (one round trip); a refusal is still recorded as this step's error.
    guard = StepGuard(
        budget=runtime.budget,
        limiter=runtime.limiter,
        task_id=incoming.task_id,
        message_id=incoming.message_id,
        max_task_retries=runtime.settings.task_max_retries,
    )
    refusal: StepFailed | None = None
    request: TaskRequest | None = None
    call: _CallPlan | None = None
    hold: Hold | None = None
    try:
        request = _admit(runtime, spec, incoming)
        if gathered is not None:
            request = gather(request, gathered, plan)
        call = _plan_call(runtime, spec, request, plan, incoming.task_id)
        hold = guard.hold(**call.sizes())
    except StepFailed as exc:
        refusal = exc
    except Exception as exc:  # a bug must still end the task explicitly
        log.exception("agent %s could not prepare message %s", spec.name, incoming.message_id)
        refusal = StepFailed(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
    begin = state.begin_step(
        incoming.task_id,
        incoming.message_id,
        spec.name,
        fingerprint(spec, incoming),
        hold=runtime.budget.reserve_args(hold) if hold is not None else (),
    )
    if begin.done is not None:
        log.info("message %s already handled; replaying its outcome", incoming.message_id)
        stored_message = AgentMessage.from_dict(begin.done.message)
        return Outcome(stored_message, begin.done, incoming.message_id, replayed=True)
    if begin.stopped is not None:
        failure = StepFailed(
            ErrorCode.BUDGET_EXCEEDED,
            f"skipped: task {incoming.task_id} ended {begin.stopped} before this step started",
        )
        return _skipped(runtime, spec, incoming, failure, delivery, started_at)
    if hold is not None and begin.refused is None:
        guard.opened(hold)

    replies: tuple[Reply, ...] = ()
    failed_retries: tuple[RetryEvent, ...] = ()
    result: StepResult | None = None
    branches = None if gathered is None else branch_status(gathered, plan)
    try:
        if begin.loop_of is not None:
            raise StepFailed(
                ErrorCode.LOOP_DETECTED,
                f"agent {spec.name!r} already received this same input in message "
                f"{begin.loop_of} of task {incoming.task_id}: a delegation cycle; stopping it",
                first_message_id=begin.loop_of,
            )
        if begin.refused is not None:
            raise _over_budget(guards.refusal(incoming.task_id, begin.refused))
        if refusal is not None or request is None or call is None:
            raise refusal or StepFailed(ErrorCode.INTERNAL_ERROR, "no request was admitted")
        output, replies = _call(runtime, call, incoming, guard)
        result = next_step(spec.name, incoming, request, output, plan)
        out = result.message
        status = "ok"
    except StepFailed as exc:
        replies = exc.replies or replies
        failed_retries = exc.retries
        out = _error_message(spec, incoming, exc, replies)
        status = "error"
    except Exception as exc:  # a bug must still end the task explicitly
        log.exception("agent %s failed on message %s", spec.name, incoming.message_id)
        failure = StepFailed(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        out = _error_message(spec, incoming, failure, replies)
        status = "error"

    retries = tuple(event for reply in replies for event in reply.retries) + failed_retries
    if retries:
        out = out.model_copy(update={"retry_count": len(retries)})
    out_dict = out.to_dict()
    record = StepRecord(
        task_id=incoming.task_id,
        input_message_id=incoming.message_id,
        input_message=incoming.to_dict(),
        agent=spec.name,
        status=status,
        message=out_dict,
        queue=delivery.queue,
        worker=delivery.worker,
        priority=delivery.priority,
        model=replies[-1].model if replies else None,
        attempts=len(replies),
        retries=len(retries),
        retry_log=[asdict(event) for event in retries],
        branches=branches,
        usage=_sum_usage(replies),
        cost_micro_usd=sum(
            cost_micro_usd(r.usage, reply_price(runtime.prices, r)) for r in replies
        ),
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        raw_output=replies[-1].raw_text if replies else None,
        summary=digest(out_dict),
        started_at=started_at,
        finished_at=utc_iso(),
        tool_calls=call.tool_log.calls if call is not None else [],
        turns=call.tool_log.turns if call is not None else [],
        batched_calls=batched_calls(replies),
    )
    final_status: str | None
    if status == "error" and out.payload.get("code") == ErrorCode.BUDGET_EXCEEDED:
        final_status = "budget_exceeded"  # in a chord too: branches not yet started are skipped
    elif status == "error":
        # Inside a chord the aggregating step decides; elsewhere an error ends the task.
        final_status = None if delivery.in_chord else "failed"
    else:
        final_status = result.final_status if result else None
    letter = None
    if status == "error":
        # A chord's body needs its branches' answers, so its letter is not retryable alone.
        retry_with = None if gathered is not None else plan.model_dump(exclude_defaults=True)
        letter = _letter(spec, raw, out, retry_with)
    # The record, its review or dead letter and the settlement are one atomic write: a crash
    # cannot leave a task in review that the queue lacks, or an error without its letter.
    stored = state.record_step(
        record,
        final_status=final_status,
        settle=guard.take_settlement(),
        review=final_status == TaskStatus.NEEDS_REVIEW,
        dead_letter=letter,
    )
    if stored is not record:
        # A concurrent delivery of the same message won the race: its result stands, and this
        # one answers like a redelivery (it sends the same derived hand-off, harmlessly).
        stored_message = AgentMessage.from_dict(stored.message)
        return Outcome(stored_message, stored, incoming.message_id, replayed=True)
    return Outcome(out, record, incoming.message_id)


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


@dataclass(frozen=True)
class _CallPlan:
    """What the step will ask the model, known before the step begins."""

    agent: str
    model: str
    system: str
    blocks: list[str]
    output_model: type[BaseModel]
    max_tokens: int
    price: Price
    routes: bool = False
    """A router's call: an answer naming no known target is `unknown_agent`."""
    tools: tuple[Any, ...] = ()
    """The agent's Tools and MCPServers: with any, the step is a tool loop."""
    max_turns: int = 8
    batch: bool = False
    """Through the Message Batches API (workers/batching.py); `price` is then the batch price."""
    tool_log: ToolLog = field(default_factory=ToolLog, compare=False)
    """What the tool loop did (calls, cost per turn), for the step's record."""

    def sizes(self) -> dict[str, Any]:
        """What a budget hold is computed from (StepGuard.hold); a loop's first turn sends
        the tools too."""
        blocks = self.blocks
        if self.tools:
            defined = tool_definitions(resolve_tools(self.tools))
            blocks = sized_blocks([first_message(self.blocks)], defined)
        return {
            "price": self.price,
            "system": self.system,
            "blocks": blocks,
            "schema": schema_text(self.output_model),
            "max_tokens": self.max_tokens,
        }


def _plan_call(
    runtime: Runtime, spec: AgentSpec, request: TaskRequest, plan: StepOptions, task_id: str
) -> _CallPlan:
    model = spec.model_in(runtime.settings)
    try:
        documents = load_documents(runtime.redis, task_id, request.context.get("documents"))
    except ChorusError as exc:
        raise StepFailed(ErrorCode.INVALID_MESSAGE, str(exc)) from None
    batch = wants_batch(runtime.settings, spec, plan)
    price = runtime.prices[model]
    return _CallPlan(
        agent=spec.name,
        model=model,
        system=spec.system_prompt,
        blocks=_prompt(request, documents),
        output_model=output_model(spec.output_model, plan),
        max_tokens=spec.max_tokens,
        price=price.batch() if batch else price,
        routes=plan.role == "route",
        tools=spec.tools,
        max_turns=spec.max_turns,
        batch=batch,
    )


def _over_budget(exc: BudgetExceededError) -> StepFailed:
    failure = StepFailed(
        ErrorCode.BUDGET_EXCEEDED, str(exc), used=exc.used, wanted=exc.want, limit=exc.limit
    )
    failure.replies = exc.replies
    return failure


def _call(
    runtime: Runtime, call: _CallPlan, incoming: AgentMessage, guard: StepGuard
) -> tuple[BaseModel, tuple[Reply, ...]]:
    result: StructuredResult | LoopResult
    try:
        if call.tools:
            loop = LoopPlan(
                agent=call.agent,
                task_id=incoming.task_id,
                message_id=incoming.message_id,
                model=call.model,
                system=call.system,
                blocks=call.blocks,
                output_model=call.output_model,
                max_tokens=call.max_tokens,
                price=call.price,
                tools=resolve_tools(call.tools),
                max_turns=call.max_turns,
            )
            journal = Journal(
                runtime.redis, incoming.task_id, incoming.message_id, runtime.settings.state_ttl
            )
            result = run_tool_loop(
                runtime.claude, guard, runtime.budget, journal, loop, call.tool_log
            )
        elif call.batch:
            batched = BatchedCall(
                agent=call.agent,
                task_id=incoming.task_id,
                message_id=incoming.message_id,
                model=call.model,
                system=call.system,
                blocks=call.blocks,
                output_model=call.output_model,
                max_tokens=call.max_tokens,
                price=call.price,
                full_price=runtime.prices[call.model],
            )
            result = batched_structured(runtime, batched, guard)
        else:
            result = runtime.claude.structured(
                model=call.model,
                system=call.system,
                user_blocks=call.blocks,
                output_model=call.output_model,
                max_tokens=call.max_tokens,
                user_id=incoming.task_id,
                guard=guard,
                price=call.price,
            )
    except BudgetExceededError as exc:
        raise _over_budget(exc) from None
    except ToolLimitError as exc:
        failure = StepFailed(ErrorCode.TOOL_LIMIT, str(exc), max_turns=call.max_turns)
        failure.replies = exc.replies
        raise failure from None
    except ModelCallError as exc:
        code = ErrorCode.RETRY_LIMIT if exc.capped else ErrorCode.MODEL_ERROR
        failure = StepFailed(code, str(exc), http_status=exc.status)
        failure.replies, failure.retries = exc.replies, exc.retries
        raise failure from None
    if result.output is None:
        code = ErrorCode.INVALID_OUTPUT
        if call.routes and result.error_fields == ("agent",):
            code = ErrorCode.UNKNOWN_AGENT
        failure = StepFailed(code, f"model output rejected twice: {result.error}")
        failure.replies = result.replies
        raise failure
    return result.output, result.replies


def _prompt(request: TaskRequest, documents: list[tuple[str, str]]) -> list[str]:
    """The documents first (the longest stable prefix, for the prompt cache), then the
    request, guidance and earlier results as separate text blocks."""
    blocks = [f"Document {name}:\n{text}" for name, text in documents]
    blocks.append(request.text)
    if request.instructions:
        blocks.append(f"Instructions: {request.instructions}")
    blocks.extend(
        f"Context from {name}: {json.dumps(value)}"
        for name, value in request.context.items()
        if name != "documents"
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


def fingerprint(spec: AgentSpec, incoming: AgentMessage) -> str:
    """Same agent, same request, same retry: the mark of a delegation cycle (A -> B -> A).

    A revision round brings the critique along, so the evaluator's bounded loop differs."""
    body = json.dumps(
        [spec.name, incoming.payload, incoming.retry_count], sort_keys=True, default=str
    )
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _skipped(
    runtime: Runtime,
    spec: AgentSpec,
    incoming: AgentMessage,
    failure: StepFailed,
    delivery: Delivery,
    started_at: str,
) -> Outcome:
    """A step the task no longer wants (its budget ran out): an error result, no model call."""
    out = _error_message(spec, incoming, failure, ())
    record = StepRecord(
        task_id=incoming.task_id,
        input_message_id=incoming.message_id,
        input_message=incoming.to_dict(),
        agent=spec.name,
        status="skipped",
        message=out.to_dict(),
        queue=delivery.queue,
        worker=delivery.worker,
        priority=delivery.priority,
        summary=digest(out.to_dict()),
        started_at=started_at,
        finished_at=utc_iso(),
    )
    stored = runtime.state.record_step(record, final_status="budget_exceeded")
    return Outcome(AgentMessage.from_dict(stored.message), stored, incoming.message_id)


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
        summary=digest(message.to_dict()),
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


def _letter(
    spec: AgentSpec, body: object, error: AgentMessage, retry_with: dict[str, Any] | None = None
) -> DeadLetter:
    """`retry_with` (the step's options) makes the letter retryable with `chorus dlq retry`."""
    return DeadLetter(
        agent=spec.name,
        code=str(error.payload.get("code")),
        error=str(error.payload.get("message")),
        body=body,
        options=retry_with,
    )


def _dead_letter(runtime: Runtime, spec: AgentSpec, body: object, error: AgentMessage) -> None:
    """A letter with no step record to ride with (an undecodable message)."""
    letter = _letter(spec, body, error)
    runtime.state.dead_letter(
        task_id=error.task_id,
        agent=letter.agent,
        code=letter.code,
        error=letter.error,
        body=letter.body,
    )


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
