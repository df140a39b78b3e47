"""Running one model turn's tool calls: all at once, each bounded in time, none able to raise.

Every failure (an unknown tool, arguments that do not validate, an exception, a timeout, a
result that cannot be encoded) becomes an error outcome the model reads and can act on;
tracebacks go to the log, never to the model.

A call that times out is abandoned, not stopped: Python cannot kill a thread, so synchronous
code that hangs keeps its (daemon) thread until it returns or the process exits. Its outcome
is reported at the deadline and the turn goes on without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import BaseModel

from workers import telemetry
from workers.tools import Tool, ToolContext, ToolError, ToolInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolCall:
    """One `tool_use` block of the model's answer."""

    id: str
    """The block's `id`: the `tool_use_id` its result must carry."""
    name: str
    input: dict[str, Any]

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> ToolCall:
        """From a `{"type": "tool_use", "id", "name", "input"}` block as the API returns it."""
        return cls(id=block["id"], name=block["name"], input=dict(block.get("input") or {}))


@dataclass(frozen=True)
class ToolOutcome:
    """What one call gave: exactly one of `output` and `error` is set."""

    tool_use_id: str
    name: str
    input: dict[str, Any]
    output: str | None
    error: str | None
    """What the model is told went wrong; no traceback."""
    duration_ms: float

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def to_result_block(self) -> dict[str, Any]:
        """The `tool_result` block that answers the call in the next user message."""
        content = self.error if self.error is not None else self.output
        return {
            "type": "tool_result",
            "tool_use_id": self.tool_use_id,
            "content": content or "",
            "is_error": self.is_error,
        }


def run_tool_calls(
    tools: Mapping[str, Tool],
    calls: Sequence[ToolCall],
    context_for: Callable[[ToolCall], ToolContext],
    *,
    max_parallel: int = 4,
    default_timeout: float = 30.0,
    on_outcome: Callable[[ToolOutcome], None] | None = None,
) -> list[ToolOutcome]:
    """Run every call of one turn, up to `max_parallel` at once; outcomes in call order.

    Contexts are built first, in the caller's thread: a `context_for` that raises is the
    runner's bug and propagates, unlike any failure of a tool. `on_outcome` sees each outcome
    as soon as its call ends (the journal writes it then, so a crash mid-turn loses only the
    calls still running); like `context_for`, an exception from it propagates.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
    if not calls:
        return []
    contexts = [context_for(call) for call in calls]
    workers = min(max_parallel, len(calls))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chorus-tools") as pool:
        futures = [
            # The execute_tool span's parent (the step's span) is taken here, in this thread.
            pool.submit(
                telemetry.traced_tool(call.name, call.id, _run_and_report),
                tools,
                call,
                context,
                default_timeout,
                on_outcome,
            )
            for call, context in zip(calls, contexts, strict=True)
        ]
        return [future.result() for future in futures]


def _run_and_report(
    tools: Mapping[str, Tool],
    call: ToolCall,
    context: ToolContext,
    default_timeout: float,
    on_outcome: Callable[[ToolOutcome], None] | None,
) -> ToolOutcome:
    outcome = _run_one(tools, call, context, default_timeout)
    if on_outcome is not None:
        on_outcome(outcome)
    return outcome


class _Attempt:
    """The result of a tool's thread, handed back to the pool thread that waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.exception: BaseException | None = None
        self.duration_ms = 0.0


def _run_one(
    tools: Mapping[str, Tool], call: ToolCall, context: ToolContext, default_timeout: float
) -> ToolOutcome:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "(none)"
        log.warning("task %s: the model called unknown tool %r", context.task_id, call.name)
        return _failed(call, f"Unknown tool {call.name!r}; the known tools are: {known}", 0.0)
    timeout = tool.timeout if tool.timeout is not None else default_timeout
    attempt = _Attempt()
    # Its own daemon thread, not the pool's: a hung tool must not hold the pool (or exit).
    thread = threading.Thread(
        target=_attempt, args=(tool, call, context, attempt), name=f"chorus-tool-{call.name}"
    )
    thread.daemon = True
    started = time.perf_counter()
    thread.start()
    if not attempt.done.wait(timeout):
        log.warning(
            "task %s: tool %r (%s) timed out after %g s; its thread is abandoned",
            context.task_id,
            call.name,
            call.id,
            timeout,
        )
        waited = (time.perf_counter() - started) * 1000
        return _failed(call, f"Tool {call.name!r} timed out after {timeout:g} s", waited)
    exc = attempt.exception
    if exc is None:
        try:
            output = encode_output(attempt.value)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as err:
            log.error(
                "task %s: tool %r returned what JSON cannot hold: %s",
                context.task_id,
                call.name,
                err,
            )
            kind = type(attempt.value).__name__
            return _failed(
                call, f"Tool {call.name!r} returned a {kind} that is not JSON", attempt.duration_ms
            )
        return ToolOutcome(call.id, call.name, call.input, output, None, attempt.duration_ms)
    if isinstance(exc, ToolInputError):
        log.info("task %s: %s", context.task_id, exc)
        return _failed(call, str(exc), attempt.duration_ms)
    if isinstance(exc, ToolError):
        return _failed(call, str(exc), attempt.duration_ms)
    log.error(
        "task %s: tool %r (%s) raised",
        context.task_id,
        call.name,
        call.id,
        exc_info=exc,
    )
    return _failed(call, f"{type(exc).__name__}: {exc}", attempt.duration_ms)


def _attempt(tool: Tool, call: ToolCall, context: ToolContext, attempt: _Attempt) -> None:
    started = time.perf_counter()
    try:
        attempt.value = tool.invoke(call.input, context)
    except BaseException as exc:  # even SystemExit: this thread has nobody else to tell
        attempt.exception = exc
    finally:
        attempt.duration_ms = (time.perf_counter() - started) * 1000
        attempt.done.set()


def _failed(call: ToolCall, error: str, duration_ms: float) -> ToolOutcome:
    return ToolOutcome(call.id, call.name, call.input, None, error, duration_ms)


def encode_output(value: object) -> str:
    """A string as it is; a pydantic model by its own JSON; anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return pydantic_core.to_json(value).decode()
