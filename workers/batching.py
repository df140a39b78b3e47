"""A step's model calls through the Message Batches API: half the price, for work that can wait.

A batched step does what a synchronous one does (the same request, the same validation with
one stricter retry, the same budget, record and hand-off), except that each model call is a
request in a batch. The step parks its request (batch_park.lua: the request joins its model's
pending set, the step's signature is kept to resume it) and its Celery task ends without a
result (`BatchParked`, caught by the agent's task), so no worker slot waits for the batch. The
fleet's batcher (workers/batcher.py) sends the requests, and when a result arrives it stores
it in the step's batch hash and publishes the step again, same task id; any worker runs it,
finds the result for its custom_id and goes on as if the call had just returned.

A custom_id is derived from the task id, the step's input message id and the attempt, so every
delivery of a step asks for the same request and a request is parked once.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from pydantic import BaseModel

from messages import ErrorCode
from workers import keys, scripts
from workers.batch_results import parked_ttl
from workers.budget import (
    BudgetExceededError,
    Reservation,
    hold_args,
    refusal,
    settle_args,
    worst_prompt_tokens,
)
from workers.claude import InvalidOutput, Reply, StructuredResult, schema_text, stricter, validate
from workers.flow import StepFailed, StepOptions
from workers.models import Price
from workers.registry import PRIORITY_LEVELS, AgentSpec
from workers.runtime import Runtime
from workers.settings import Settings
from workers.stepguard import StepGuard

_PARK = scripts.load("batch_park")

ATTEMPTS = 2
"""The call and its one stricter retry, as for a synchronous call."""

FAILED_CODES = {
    "errored": ErrorCode.BATCH_ERRORED,
    "expired": ErrorCode.BATCH_EXPIRED,
    "canceled": ErrorCode.BATCH_CANCELED,
}


class BatchParked(BaseException):
    """The step waits for a batch result: not an error, so the runner's catch-all lets it
    pass; the agent's task catches it and ends without a result (Celery's Ignore)."""

    def __init__(self, task_id: str, message_id: str, attempt: int, custom_id: str) -> None:
        super().__init__(
            f"task {task_id}: step {message_id} waits for batched request {custom_id} "
            f"(attempt {attempt})"
        )
        self.task_id = task_id
        self.message_id = message_id
        self.attempt = attempt
        self.custom_id = custom_id


def wants_batch(settings: Settings, spec: AgentSpec, options: StepOptions) -> bool:
    """Batched when the task, its workflow or the agent asks, or its priority is `low` and
    CHORUS_BATCH_LOW_PRIORITY maps low to batches. A tool loop's turns stay synchronous."""
    if spec.tools:
        return False
    low = settings.batch_low_priority and options.priority == PRIORITY_LEVELS["low"]
    return options.batch or spec.batch or low


def custom_id(task_id: str, message_id: str, attempt: int) -> str:
    """The request's custom_id: the same for every delivery of the same call (<= 64 chars)."""
    digest = hashlib.sha256(f"{task_id}\0{message_id}\0{attempt}".encode()).hexdigest()[:40]
    return f"chorus_{digest}_{attempt}"


def reply_price(prices: dict[str, Price], reply: Reply) -> Price:
    """What a reply is billed at: the batch price when a batch answered it."""
    price = prices[reply.model]
    return price.batch() if reply.batch_id else price


def batched_calls(replies: tuple[Reply, ...]) -> list[dict[str, Any]]:
    """The step record's marks of its batched calls: {attempt, batch_id, custom_id}."""
    return [
        {"attempt": index, "batch_id": reply.batch_id, "custom_id": reply.custom_id}
        for index, reply in enumerate(replies, 1)
        if reply.batch_id
    ]


@dataclass(frozen=True)
class BatchedCall:
    """One step's structured call, as the runner planned it (price: the batch price)."""

    agent: str
    task_id: str
    message_id: str
    model: str
    system: str
    blocks: list[str]
    output_model: type[BaseModel]
    max_tokens: int
    price: Price
    full_price: Price


@dataclass(frozen=True)
class StepCalls:
    """What the step's batch hash holds: results by attempt, attempts settled, requests."""

    results: dict[int, dict[str, Any]]
    settled: set[int]
    requested: set[int]

    @classmethod
    def read(cls, client: redis.Redis, task_id: str, message_id: str) -> StepCalls:
        raw = cast(dict[bytes, bytes], client.hgetall(keys.batch_step(task_id, message_id)))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        results = {int(k[4:]): json.loads(v) for k, v in fields.items() if k.startswith("res:")}
        settled = {int(k[8:]) for k in fields if k.startswith("settled:")}
        requested = {int(k[4:]) for k in fields if k.startswith("req:")}
        return cls(results, settled, requested)


def batched_structured(runtime: Runtime, call: BatchedCall, guard: StepGuard) -> StructuredResult:
    """`ClaudeClient.structured`, each attempt a batched request: the answer when the results
    are in, else parks the step (raises BatchParked). Raises StepFailed for a request that
    errored, expired or was canceled (unless CHORUS_BATCH_FALLBACK=sync), and
    BudgetExceededError when the stricter retry does not fit the budget."""
    state = StepCalls.read(runtime.redis, call.task_id, call.message_id)
    text = schema_text(call.output_model)
    replies: list[Reply] = []
    prompt = list(call.blocks)
    error, fields = "", cast(tuple[str, ...], ())
    for attempt in range(1, ATTEMPTS + 1):
        if attempt == 1:
            # The begin's hold (made again by every delivery); released when an earlier
            # delivery already settled this call's cost (before parking the retry).
            reservation = guard.reserve(
                model=call.model,
                price=call.price,
                system=call.system,
                blocks=prompt,
                schema=text,
                max_tokens=call.max_tokens,
            )
        else:
            reservation = Reservation(call.task_id, _field(call, attempt), call.price)
        result = state.results.get(attempt)
        if result is None:
            _park(runtime, call, guard, attempt, prompt, tuple(replies))
        assert result is not None
        if result["type"] != "succeeded":
            guard.settle(reservation, None)
            return _failed(runtime, call, guard, attempt, prompt, result, tuple(replies))
        reply = _reply(call.model, result)
        already = attempt in state.settled
        guard.settle(reservation, None if already else reply.usage)
        replies.append(reply)
        try:
            output = validate(reply, call.output_model)
        except InvalidOutput as exc:
            error, fields = str(exc), exc.fields
            prompt = [*call.blocks, stricter(error)]
            continue
        return StructuredResult(output=output, replies=tuple(replies), error=None)
    return StructuredResult(output=None, replies=tuple(replies), error=error, error_fields=fields)


def _field(call: BatchedCall, attempt: int) -> str:
    return f"{call.message_id}:{attempt}"


def _reply(model: str, result: dict[str, Any]) -> Reply:
    from anthropic.types import Message

    from workers.claude import batch_reply

    message = Message.model_validate(result["message"])
    return batch_reply(
        model, message, batch_id=str(result["batch_id"]), custom_id=str(result["custom_id"])
    )


def _park(
    runtime: Runtime,
    call: BatchedCall,
    guard: StepGuard,
    attempt: int,
    prompt: list[str],
    replies: tuple[Reply, ...],
) -> None:
    """Park attempt `attempt`'s request (settling the attempt before it and holding this
    one's worst case in the same call), then raise BatchParked."""
    from celery._state import get_current_task

    cid = custom_id(call.task_id, call.message_id, attempt)
    params = runtime.claude.batch_params(
        model=call.model,
        system=call.system,
        user_blocks=prompt,
        output_model=call.output_model,
        max_tokens=call.max_tokens,
        user_id=call.task_id,
    )
    entry = {
        "custom_id": cid,
        "task_id": call.task_id,
        "message_id": call.message_id,
        "attempt": attempt,
        "model": call.model,
        "agent": call.agent,
        "params": params,
    }
    task = get_current_task()
    resume = json.loads(json.dumps(task.signature_from_request())) if task else None
    hold: Any = ()
    if attempt > 1:
        worst = runtime.budget.hold(
            call.task_id,
            _field(call, attempt),
            prompt_tokens=worst_prompt_tokens(call.system, prompt, schema_text(call.output_model)),
            max_tokens=call.max_tokens,
            price=call.price,
        )
        hold = runtime.budget.reserve_args(worst)
    settlement = guard.take_settlement()
    answer = _PARK(
        runtime.redis,
        keys={
            "step": keys.batch_step(call.task_id, call.message_id),
            "task": keys.task(call.task_id),
            "board": keys.board(call.task_id),
            "trace": keys.trace(call.task_id),
            "budget": keys.budget(call.task_id),
            "requests": keys.BATCH_REQUESTS,
            "pending": keys.batch_pending(call.model),
            "models": keys.BATCH_MODELS,
        },
        args={
            "attempt": attempt,
            "custom_id": cid,
            "entry": json.dumps(entry, separators=(",", ":")),
            "resume": json.dumps(resume, separators=(",", ":")) if resume else "",
            "model": call.model,
            "agent": call.agent,
            "score": time.time(),
            "ttl": parked_ttl(runtime.settings),
            "settled_attempt": attempt - 1 if settlement is not None and attempt > 1 else 0,
            **settle_args(settlement),
            **hold_args(hold),
        },
    )
    if answer and answer[0] == b"refused":
        exc: BudgetExceededError = refusal(call.task_id, answer[1:])
        exc.replies = replies
        raise exc
    raise BatchParked(call.task_id, call.message_id, attempt, cid)


def _failed(
    runtime: Runtime,
    call: BatchedCall,
    guard: StepGuard,
    attempt: int,
    prompt: list[str],
    result: dict[str, Any],
    replies: tuple[Reply, ...],
) -> StructuredResult:
    """A request that errored, expired or was canceled: an explicit error, or (fallback
    `sync`) the same call made through the Messages API, at the full price."""
    kind = str(result["type"])
    if runtime.settings.batch_fallback == "sync":
        fallback = StepGuard(
            budget=runtime.budget,
            limiter=runtime.limiter,
            task_id=call.task_id,
            message_id=f"{call.message_id}:sync{attempt}",
            max_task_retries=runtime.settings.task_max_retries,
        )
        try:
            answer = runtime.claude.structured(
                model=call.model,
                system=call.system,
                user_blocks=prompt,
                output_model=call.output_model,
                max_tokens=call.max_tokens,
                user_id=call.task_id,
                guard=fallback,
                price=call.full_price,
            )
        except BudgetExceededError as exc:
            exc.replies = (*replies, *exc.replies)
            raise
        finally:
            pending = fallback.take_settlement()
            if pending is not None:
                runtime.budget.settle(pending)
        return StructuredResult(
            answer.output, (*replies, *answer.replies), answer.error, answer.error_fields
        )
    inner = (result.get("error") or {}).get("error") or {}
    why = f": {inner.get('type')}: {inner.get('message')}" if inner else ""
    failure = StepFailed(
        FAILED_CODES.get(kind, ErrorCode.BATCH_ERRORED),
        f"batched request {result.get('custom_id')} (attempt {attempt}) of batch "
        f"{result.get('batch_id')} ended {kind}{why}",
        batch_id=result.get("batch_id"),
        custom_id=result.get("custom_id"),
        error_type=inner.get("type"),
    )
    failure.replies = replies
    raise failure
