"""The one place that talks to Claude, through the official anthropic SDK.

The same code serves the real API and the local simulator: only `base_url` differs.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, replace
from typing import Any, cast

import anthropic
from anthropic import APIResponse
from anthropic.types import (
    CacheControlEphemeralParam,
    Message,
    MessageParam,
    TextBlockParam,
    ToolParam,
)
from pydantic import BaseModel, ValidationError

from workers import telemetry
from workers.guards import BudgetExceededError, Reservation, StepGuard
from workers.models import Price, Usage
from workers.retry import ModelCallError, RetryEvent, RetryPolicy, call_with_retries, retry_after
from workers.settings import Settings


@dataclass(frozen=True)
class Reply:
    """One model call: what came back, verbatim, and what it cost in tokens."""

    model: str
    """The model id that was requested (and is priced), not the dated id the API echoes."""
    raw_text: str
    """The tool input (as JSON) or the text the model produced, kept for debugging."""
    data: object | None
    """Parsed JSON, or None when the output was not JSON."""
    stop_reason: str | None
    usage: Usage
    latency_ms: float
    request_id: str | None
    retries: tuple[RetryEvent, ...] = ()
    """Transport retries it took to get this reply."""
    content: tuple[dict[str, Any], ...] = ()
    """The answer's text and tool_use blocks as the API sent them, for the next turn of a
    tool loop (and its journal)."""
    batch_id: str | None = None
    """The Message Batch that answered this call (billed at the batch price); None when it
    went through the Messages API."""
    custom_id: str | None = None
    """The call's custom_id in that batch."""

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        """The tool_use blocks of this answer, in order."""
        return [block for block in self.content if block.get("type") == "tool_use"]


@dataclass(frozen=True)
class _Request:
    model: str
    system: str
    schema: dict[str, Any]
    schema_text: str
    max_tokens: int
    user_id: str | None


@dataclass(frozen=True)
class StructuredResult:
    """The outcome of asking for a schema-conforming answer (with at most one stricter retry)."""

    output: BaseModel | None
    """Validated output, or None when both attempts failed validation."""
    replies: tuple[Reply, ...]
    error: str | None
    """Why validation failed last, quoting the validator; None on success."""
    error_fields: tuple[str, ...] = ()


class ClaudeClient:
    """Wraps one anthropic.Anthropic client; create one per worker process, after fork."""

    def __init__(self, settings: Settings) -> None:
        self._sdk = anthropic.Anthropic(
            api_key=settings.anthropic_api_key,
            base_url=settings.anthropic_base_url,
            timeout=settings.call_timeout,
            max_retries=0,  # workers.retry is the one retry layer
        )
        self._policy = RetryPolicy(
            max_retries=settings.call_retries, base_delay=settings.retry_base_delay
        )
        self._prompt_cache = settings.prompt_cache
        self._prices = settings.prices  # for the chat span's chorus.cost_usd

    def close(self) -> None:
        self._sdk.close()

    def structured(
        self,
        *,
        model: str,
        system: str,
        user_blocks: list[str],
        output_model: type[BaseModel],
        max_tokens: int,
        user_id: str | None = None,
        guard: StepGuard | None = None,
        price: Price | None = None,
    ) -> StructuredResult:
        """Ask for JSON matching `output_model`; retry once, stricter, when the answer misses.

        The schema goes out as `output_config.format` (structured outputs): current models
        refuse a forced tool_choice. The SDK's `transform_schema` moves constraints the API
        does not enforce into descriptions; the full model validates the answer here.
        With a `guard`, each call first reserves its worst case against the task's budget
        (BudgetExceededError: the call is not made) and each attempt waits for the fleet's
        rate-limit buckets. Raises ModelCallError (carrying the replies already paid for) when
        the API fails.
        """
        schema = _output_schema(output_model)
        text = schema_text(output_model)
        replies: list[Reply] = []
        prompt = list(user_blocks)
        error = ""
        fields: tuple[str, ...] = ()
        request = _Request(model, system, schema, text, max_tokens, user_id)
        for _attempt in range(2):
            reservation: Reservation | None = None
            try:
                if guard is not None and price is not None:
                    reservation = guard.reserve(
                        model=model,
                        price=price,
                        system=system,
                        blocks=prompt,
                        schema=text,
                        max_tokens=max_tokens,
                    )
                reply = self._call(request, [_user_message(prompt, self._prompt_cache)], guard)
            except (ModelCallError, BudgetExceededError) as exc:
                if guard is not None and reservation is not None:
                    guard.settle(reservation, None)
                exc.replies = tuple(replies)
                raise
            if guard is not None and reservation is not None:
                guard.settle(reservation, reply.usage)
            replies.append(reply)
            try:
                output = validate(reply, output_model)
            except InvalidOutput as exc:
                error, fields = str(exc), exc.fields
                prompt = [*user_blocks, stricter(error)]
                continue
            return StructuredResult(output=output, replies=tuple(replies), error=None)
        return StructuredResult(
            output=None, replies=tuple(replies), error=error, error_fields=fields
        )

    def turn(
        self,
        *,
        model: str,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        output_model: type[BaseModel],
        max_tokens: int,
        sized_as: list[str],
        user_id: str | None = None,
        guard: StepGuard | None = None,
    ) -> Reply:
        """One model turn of a tool loop: the whole conversation so far, with the tools.

        The caller (workers/tool_loop.py) reserves the budget and validates; this waits for the
        rate limiter like any call (`sized_as` is the prompt as the limiter estimates it).
        Raises ModelCallError when the API fails.
        """
        schema = _output_schema(output_model)
        request = _Request(model, system, schema, schema_text(output_model), max_tokens, user_id)
        sent = [dict(m) for m in messages]
        if self._prompt_cache and sent and isinstance(sent[-1].get("content"), list):
            # The newest block is the next turn's cache prefix: each turn reads the last one's.
            blocks = [dict(block) for block in sent[-1]["content"]]
            blocks[-1]["cache_control"] = {"type": "ephemeral"}
            sent[-1] = {**sent[-1], "content": blocks}
        return self._call(request, sent, guard, tools=tools, sized_as=sized_as)

    def _call(
        self,
        request: _Request,
        messages: list[dict[str, Any]],
        guard: StepGuard | None,
        *,
        tools: list[dict[str, Any]] | None = None,
        sized_as: list[str] | None = None,
    ) -> Reply:
        started = time.perf_counter()
        prompt = sized_as if sized_as is not None else _texts(messages)
        estimate = guard.estimate(request.system, prompt, request.schema_text) if guard else 0
        params = self._params(request, messages, tools)

        def create() -> APIResponse[Message]:
            if guard is not None:
                guard.before_attempt(request.model, estimate, request.max_tokens)
            try:
                return self._sdk.messages.with_raw_response.create(**params)
            except anthropic.APIError as exc:
                if guard is not None:
                    response = getattr(exc, "response", None)
                    guard.after_attempt(
                        request.model,
                        estimate=estimate,
                        max_tokens=request.max_tokens,
                        usage=None,
                        headers=response.headers if response is not None else {},
                        retry_after=retry_after(exc)
                        if isinstance(exc, anthropic.RateLimitError)
                        else None,
                    )
                raise

        with telemetry.chat_span(request.model, max_tokens=request.max_tokens) as chat:
            raw, retries = call_with_retries(
                self._policy, create, allow_retry=guard.allow_retry if guard else None
            )
            message = raw.parse()
            chat.response(message, headers=raw.headers, retries=retries, prices=self._prices)
        latency_ms = (time.perf_counter() - started) * 1000
        reply = _reply(request.model, message, latency_ms, raw.headers.get("request-id"))
        if guard is not None:
            guard.after_attempt(
                request.model,
                estimate=estimate,
                max_tokens=request.max_tokens,
                usage=reply.usage,
                headers=raw.headers,
                retry_after=None,
            )
        return replace(reply, retries=retries)

    def _params(
        self,
        request: _Request,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The Messages API parameters of one call: what `messages.create` sends, and what a
        batched call (`batch_params`) puts in its batch request."""
        ephemeral: CacheControlEphemeralParam = {"type": "ephemeral"}
        system: list[TextBlockParam] = [{"type": "text", "text": request.system}]
        if self._prompt_cache:
            system[0]["cache_control"] = ephemeral
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "system": system,
            "messages": cast("list[MessageParam]", messages),
            "output_config": {"format": {"type": "json_schema", "schema": request.schema}},
        }
        if tools:
            params["tools"] = cast("list[ToolParam]", tools)
        if request.user_id:
            params["metadata"] = {"user_id": request.user_id}
        return params

    def batch_params(
        self,
        *,
        model: str,
        system: str,
        user_blocks: list[str],
        output_model: type[BaseModel],
        max_tokens: int,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """The `params` of a Message Batch request for the call `structured` would make with
        the same arguments (the prompt as given: a stricter retry passes its extra block)."""
        request = _Request(model, system, _output_schema(output_model), "", max_tokens, user_id)
        return self._params(request, [_user_message(user_blocks, self._prompt_cache)])

    @property
    def sdk(self) -> anthropic.Anthropic:
        """The SDK client (the batcher creates and polls batches with it)."""
        return self._sdk


def batch_reply(model: str, message: Message, *, batch_id: str, custom_id: str) -> Reply:
    """The Reply of a batched call from the Message its `succeeded` result carries."""
    reply = _reply(model, message, 0.0, message.id)
    return replace(reply, batch_id=batch_id, custom_id=custom_id)


def _reply(model: str, message: Message, latency_ms: float, request_id: str | None) -> Reply:
    raw_text, data = _extract(message)
    usage = message.usage
    return Reply(
        model=model,
        raw_text=raw_text,
        data=data,
        stop_reason=message.stop_reason,
        usage=Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        ),
        latency_ms=latency_ms,
        request_id=request_id,
        content=tuple(_block(block) for block in message.content),
    )


def _user_message(prompt: list[str], cache: bool) -> dict[str, Any]:
    """The one user message of a plain call. The system prompt and the request itself are
    cached, so a stricter retry or a repeated request reads them back at a tenth of the price."""
    content: list[TextBlockParam] = [{"type": "text", "text": block} for block in prompt]
    if cache:
        content[0]["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": content}


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    """The texts of a conversation, for the rate limiter's estimate."""
    out: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
            continue
        for block in content or []:
            text = block.get("text") if isinstance(block, dict) else None
            out.append(text if isinstance(text, str) else json.dumps(block, default=str))
    return out


def _block(block: Any) -> dict[str, Any]:
    """A content block as the JSON the next request (and the journal) carries."""
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if block.type == "text":
        return {"type": "text", "text": block.text}
    dumped: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    return dumped


@functools.lru_cache(maxsize=256)
def _output_schema(output_model: type[BaseModel]) -> dict[str, Any]:
    """Schemas are built once per model class, not on every call of a busy worker."""
    return anthropic.transform_schema(output_model)


@functools.lru_cache(maxsize=256)
def schema_text(output_model: type[BaseModel]) -> str:
    """The output schema as sent, for sizing the prompt (budget holds, rate-limit estimates)."""
    return json.dumps(_output_schema(output_model))


class InvalidOutput(Exception):
    """The answer does not validate; `fields` names the offending fields."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


def _extract(message: Message) -> tuple[str, object | None]:
    """The answer's text and, when it is JSON, the parsed value."""
    text = "".join(block.text for block in message.content if block.type == "text")
    try:
        return text, json.loads(text)
    except ValueError:
        return text, None


def validate(reply: Reply, output_model: type[BaseModel]) -> BaseModel:
    if reply.stop_reason == "max_tokens":
        raise InvalidOutput("the output was cut off at max_tokens before it was complete")
    if reply.data is None:
        raise InvalidOutput("the output was not JSON")
    try:
        return output_model.model_validate(reply.data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        fields = tuple(".".join(str(p) for p in err["loc"]) for err in problems)
        detail = "; ".join(
            f"{field or '<root>'}: {err['msg']}"
            for field, err in zip(fields, problems, strict=True)
        )
        raise InvalidOutput(f"the output did not match the schema: {detail}", fields) from None


def stricter(error: str) -> str:
    return (
        f"Your previous answer was rejected: {error}. Answer again with one JSON object that "
        "satisfies the output schema exactly, including the constraints in its descriptions. "
        "No prose, no extra fields."
    )
