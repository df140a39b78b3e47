"""W3C trace context through Celery messages, so one task is one trace across the fleet.

`before_task_publish` writes `traceparent` into the message headers from the current context:
the producer's `invoke_workflow` span for the messages a submit sends, the step's
`invoke_agent` span for whatever a step sends (a chain's next link, a `replace` canvas, the
body of a chord it sends). `task_prerun` reads it back and opens the step's span as its
child, current for the step's thread (Chorus runs Celery's threads pool: prerun, the task and
postrun share a thread); `task_postrun` ends it.

A chord's body is published by whichever header task finishes last, but its message (the
aggregator's input) comes from the chord's sender: so the body carries the context the chord
was sent in (written into the body's own headers when its header tasks leave), and the span of
the step that published it is a link (`chorus_publisher`). Parent links then follow the
message tree, as `chorus trace` draws it.
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import Any

from celery import signals
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from messages.envelope import derived_id
from workers.registry import TASK_PREFIX
from workers.telemetry_spans import ERROR_TYPE, Spans, step_attributes

W3C = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
PUBLISHER = "chorus_publisher"
"""Header: the traceparent of the span that published a message, where it is not the parent."""
CARRIED = (TRACEPARENT, "tracestate", PUBLISHER)

_UID = "chorus.telemetry."
_local = threading.local()


def connect(spans: Spans) -> None:
    handlers = _Handlers(spans)
    signals.before_task_publish.connect(
        handlers.before_publish, weak=False, dispatch_uid=_UID + "p"
    )
    signals.task_prerun.connect(handlers.prerun, weak=False, dispatch_uid=_UID + "pre")
    signals.task_postrun.connect(handlers.postrun, weak=False, dispatch_uid=_UID + "post")
    signals.worker_shutdown.connect(handlers.flush, weak=False, dispatch_uid=_UID + "stop")


def disconnect() -> None:
    signals.before_task_publish.disconnect(dispatch_uid=_UID + "p")
    signals.task_prerun.disconnect(dispatch_uid=_UID + "pre")
    signals.task_postrun.disconnect(dispatch_uid=_UID + "post")
    signals.worker_shutdown.disconnect(dispatch_uid=_UID + "stop")


class _Handlers:
    def __init__(self, spans: Spans) -> None:
        self.spans = spans

    def before_publish(
        self, body: object = None, headers: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if headers is None:
            return
        current: dict[str, str] = {}
        W3C.inject(current)
        if not current:
            return  # no span is current: the first step starts the trace
        if TRACEPARENT in headers:
            # Set by this chord's sender (see the module docstring): it stays the parent.
            if headers[TRACEPARENT] != current[TRACEPARENT]:
                headers[PUBLISHER] = current[TRACEPARENT]
        else:
            headers.update(current)
        _carry_into_chord_body(body, current)

    def prerun(
        self, task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
    ) -> None:
        request = task.request
        carrier = {}
        for key in CARRIED:
            value = getattr(request, key, None)
            if isinstance(value, str):
                carrier[key] = value
        # An empty context when nothing came: a new trace, never this thread's leftovers.
        parent = W3C.extract(carrier, context=otel_context.Context())
        name = str(getattr(task, "name", ""))
        message = _message(args, kwargs)
        span: Span | None = None
        if name.startswith(TASK_PREFIX) and message is not None:
            agent = name.removeprefix(TASK_PREFIX)
            received = str(message.get("message_id", ""))
            input_id = _input_id(received, kwargs)
            attributes: dict[str, Any] = step_attributes(
                agent, str(message.get("task_id", "")), input_id
            )
            if input_id != received:
                attributes["chorus.received_message_id"] = received
            attributes.update(_delivery(request, task_id))
            span = self.spans.tracer().start_span(
                f"invoke_agent {agent}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=_publisher_link(carrier),
            )
            parent = trace.set_span_in_context(span, parent)
        # Other tasks (Celery's own) get no span, but what they send keeps the trace.
        token = otel_context.attach(parent)
        _stack().append((task_id, span, token))

    def postrun(
        self, task_id: str = "", retval: object = None, state: object = None, **_: Any
    ) -> None:
        stack = _stack()
        while stack:
            started, span, token = stack.pop()
            otel_context.detach(token)
            if span is not None:
                _finish(span, retval if started == task_id else None, state)
                span.end()
            if started == task_id:
                return

    def flush(self, **_: Any) -> None:
        self.spans.flush()


def _stack() -> list[tuple[str, Span | None, Token[otel_context.Context]]]:
    stack: list[tuple[str, Span | None, Token[otel_context.Context]]] | None = getattr(
        _local, "stack", None
    )
    if stack is None:
        stack = _local.stack = []
    return stack


def _carry_into_chord_body(body: object, current: dict[str, str]) -> None:
    """A header task of a chord carries the chord's body: give the body this context."""
    if not isinstance(body, tuple | list) or len(body) != 3 or not isinstance(body[2], dict):
        return
    chord = body[2].get("chord")
    if not isinstance(chord, dict):
        return
    options = chord.setdefault("options", {})
    headers = options.get("headers") or {}
    if TRACEPARENT not in headers:
        options["headers"] = {**headers, **current}


def _message(args: Any, kwargs: Any) -> dict[str, Any] | None:
    """The step's AgentMessage as it travels: the first argument, or (a chord's body, whose
    first argument is the branches' answers) the `message` keyword."""
    first = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(first, dict) and "message_id" in first:
        return first
    candidate = kwargs.get("message") if isinstance(kwargs, dict) else None
    return candidate if isinstance(candidate, dict) else None


def _input_id(received: str, kwargs: Any) -> str:
    """The step's own input message id, as its record has it: a step that adopts what it
    received works on a child whose id is derived from it (workers.flow.adopted)."""
    options = kwargs.get("options") if isinstance(kwargs, dict) else None
    adopt = options.get("adopt") if isinstance(options, dict) else None
    if not adopt or not received:
        return received
    return derived_id(received, f"adopt:{adopt}")


def _delivery(request: Any, task_id: str) -> dict[str, Any]:
    info = getattr(request, "delivery_info", None) or {}
    attributes: dict[str, Any] = {"chorus.celery_task_id": task_id}
    if info.get("routing_key"):
        attributes["messaging.destination.name"] = info["routing_key"]
    if getattr(request, "hostname", None):
        attributes["chorus.worker"] = request.hostname
    if info.get("redelivered"):
        attributes["chorus.redelivered"] = True
    if getattr(request, "retries", 0):
        attributes["chorus.celery_retries"] = request.retries
    return attributes


def _publisher_link(carrier: dict[str, str]) -> list[Link]:
    publisher = carrier.get(PUBLISHER)
    if not publisher:
        return []
    context = W3C.extract({TRACEPARENT: publisher}, context=otel_context.Context())
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return []
    return [Link(span_context, {"chorus.link": "published_by"})]


def _finish(span: Span, retval: object, state: object) -> None:
    """The step's outcome: an error message it answered with, or a task that raised."""
    if state is not None:
        span.set_attribute("chorus.celery_state", str(state))
    if isinstance(retval, BaseException):
        if state != "FAILURE":
            return  # replaced (Ignore) or retried later (Retry): not a failure
        span.record_exception(retval)
        span.set_attribute(ERROR_TYPE, type(retval).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(retval)[:500]))
        return
    if not isinstance(retval, dict):
        return
    if isinstance(retval.get("message_id"), str):
        span.set_attribute("chorus.output_message_id", retval["message_id"])
    if retval.get("message_type") == "error":
        payload = retval.get("payload") or {}
        span.set_attribute(ERROR_TYPE, str(payload.get("code", "error")))
        span.set_status(Status(StatusCode.ERROR, str(payload.get("message", ""))[:500]))
