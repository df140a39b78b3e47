"""OpenTelemetry traces across the fleet, on only when the standard `OTEL_*` variables ask.

Off (no OTLP endpoint set, or `OTEL_SDK_DISABLED=true`), nothing of OpenTelemetry is imported,
no signal handler is connected and every helper hands back one shared no-op: a step pays an
attribute read. On, `install` connects Celery signal handlers (workers.telemetry_celery) that
carry W3C trace context in message headers, so one task is one trace across the producer and
every worker; the helpers below open spans under whatever span is current.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from anthropic.types import Message

    from workers import telemetry_spans
    from workers.models import Price

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either one turns tracing on (the exporter reads them itself, as the SDK documents)."""

P = ParamSpec("P")
R = TypeVar("R")


class SpanRecorder(Protocol):
    """What callers may add to an open span; the no-op ignores it."""

    def set(self, key: str, value: str | int | float | bool) -> None: ...


class ChatRecorder(SpanRecorder, Protocol):
    def response(
        self,
        message: Message,
        *,
        headers: Mapping[str, str],
        retries: Sequence[object],
        prices: Mapping[str, Price],
    ) -> None:
        """The answer's usage, cost (`chorus.cost_usd`, at the requested model's price),
        response id and model, finish reason, request id (from `headers`) and retries."""


class _Noop:
    """Stands in for every span when tracing is off: one instance, no state."""

    def set(self, key: str, value: str | int | float | bool) -> None:
        pass

    def response(
        self,
        message: Message,
        *,
        headers: Mapping[str, str],
        retries: Sequence[object],
        prices: Mapping[str, Price],
    ) -> None:
        pass


NOOP = _Noop()
_NOOP_SPAN: AbstractContextManager[_Noop] = nullcontext(NOOP)
"""Reusable and reentrant: the same object serves every disabled helper call."""

_spans: telemetry_spans.Spans | None = None
"""The active tracing of this process, or None (off). Signals are process-wide, so is this."""
_lock = threading.Lock()


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables ask for traces: an OTLP endpoint, and the SDK not disabled.

    `OTEL_TRACES_EXPORTER=none` turns traces off too (the SDK's own spelling for it).
    """
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def install(env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process when `env` (default os.environ) asks; idempotent.

    Every ChorusApp calls it when created, so producers and workers alike decide when their
    app is made. The tracer provider itself is created on the first span (after a fork).
    Returns whether tracing is on.
    """
    global _spans
    if _spans is not None:
        return True
    if not wanted(env):
        return False
    with _lock:
        if _spans is None:
            from workers import telemetry_celery, telemetry_spans

            spans = telemetry_spans.Spans()
            telemetry_celery.connect(spans)
            _spans = spans
    return True


def shutdown() -> None:
    """Flush and stop: disconnect the signal handlers and end the provider Chorus created.

    Workers need not call it (the provider flushes at exit); a process that turns tracing
    on for a while, as a test does, calls it to turn it off again.
    """
    global _spans
    with _lock:
        spans, _spans = _spans, None
    if spans is not None:
        from workers import telemetry_celery

        telemetry_celery.disconnect()
        spans.shutdown()


def active() -> bool:
    return _spans is not None


def submit_span(
    task_id: str, workflow: str, *, message_id: str | None = None
) -> AbstractContextManager[SpanRecorder]:
    """The producer's span around sending a task's canvas (`invoke_workflow {workflow}`).

    Every first step of the task is its child: the messages sent inside carry it.
    """
    if _spans is None:
        return _NOOP_SPAN
    return _spans.submit(task_id, workflow, message_id)


def agent_span(
    agent: str, *, task_id: str, message_id: str
) -> AbstractContextManager[SpanRecorder]:
    """`invoke_agent {agent}` around one step; the Celery handlers open it for every agent
    task, so call this only to trace a step run outside a worker."""
    if _spans is None:
        return _NOOP_SPAN
    return _spans.agent(agent, task_id=task_id, message_id=message_id)


def chat_span(model: str, *, max_tokens: int | None = None) -> AbstractContextManager[ChatRecorder]:
    """`chat {model}` around one model call, transport retries included (as the GenAI
    conventions ask); call `response` on what it yields with the answer."""
    if _spans is None:
        return _NOOP_SPAN
    return _spans.chat(model, max_tokens)


def tool_span(tool: str, call_id: str) -> AbstractContextManager[SpanRecorder]:
    """`execute_tool {tool}` around one tool call, in the thread that runs it."""
    if _spans is None:
        return _NOOP_SPAN
    return _spans.tool(tool, call_id, None)


def traced_tool(tool: str, call_id: str, run: Callable[P, R]) -> Callable[P, R]:
    """`run` inside an `execute_tool {tool}` span, for handing to another thread.

    Trace context lives in context variables, which a thread pool does not carry: the parent
    (the step's span) is taken here, in the caller's thread. A result with a non-empty
    `error` attribute (a ToolOutcome) marks the span as failed. Off, `run` itself comes back.
    """
    if _spans is None:
        return run
    return _spans.traced_tool(tool, call_id, run)
