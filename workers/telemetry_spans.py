"""The side of workers.telemetry that imports OpenTelemetry: provider, exporter, span helpers.

Imported only when tracing is on. Span names and attributes follow the GenAI semantic
conventions (`invoke_workflow`, `invoke_agent`, `chat`, `execute_tool`); what the conventions
have no name for is `chorus.*`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from workers.models import MICRO, Usage, cost_micro_usd

if TYPE_CHECKING:
    from anthropic.types import Message

    from workers.models import Price

P = ParamSpec("P")
R = TypeVar("R")

INSTRUMENTATION = "chorus"
DEFAULT_SERVICE_NAME = "chorus"
"""service.name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one."""
PROVIDER = "anthropic"

OPERATION = "gen_ai.operation.name"
AGENT_NAME = "gen_ai.agent.name"
TASK_ID = "chorus.task_id"
MESSAGE_ID = "chorus.message_id"
ERROR_TYPE = "error.type"


class Recorder:
    """An open span, as the helpers' callers see it."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        self.span.set_attribute(key, value)

    def fail(self, error_type: str, description: str) -> None:
        self.span.set_attribute(ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, description[:500]))


class ChatRecorder(Recorder):
    def __init__(self, span: Span, model: str) -> None:
        super().__init__(span)
        self.model = model

    def response(
        self,
        message: Message,
        *,
        headers: Mapping[str, str],
        retries: Sequence[object],
        prices: Mapping[str, Price],
    ) -> None:
        api = message.usage
        usage = Usage(
            input_tokens=api.input_tokens,
            output_tokens=api.output_tokens,
            cache_creation_input_tokens=api.cache_creation_input_tokens or 0,
            cache_read_input_tokens=api.cache_read_input_tokens or 0,
        )
        attributes: dict[str, str | int | float | tuple[str, ...]] = {
            "gen_ai.response.id": message.id,
            "gen_ai.response.model": message.model,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_input_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_input_tokens,
            "chorus.retries": len(retries),
        }
        if message.stop_reason:
            attributes["gen_ai.response.finish_reasons"] = (message.stop_reason,)
        if headers.get("request-id"):
            attributes["chorus.request_id"] = headers["request-id"]
        price = prices.get(self.model)
        if price is not None:
            # The same sum the step's record and the task's budget use, in dollars.
            attributes["chorus.cost_usd"] = cost_micro_usd(usage, price) / MICRO
        self.span.set_attributes(attributes)


class Spans:
    """This process's tracer (made on first use, again after a fork) and the span helpers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracer: trace.Tracer | None = None
        self._pid = 0
        self._owned: list[TracerProvider] = []
        """Providers Chorus made (not one the process had set): flushed and shut down here."""

    def tracer(self) -> trace.Tracer:
        pid = os.getpid()
        tracer = self._tracer
        if tracer is not None and self._pid == pid:
            return tracer
        with self._lock:
            if self._tracer is None or self._pid != pid:
                self._tracer, self._pid = self._make_tracer(), pid
            return self._tracer

    def _make_tracer(self) -> trace.Tracer:
        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider):
            # The process has its own provider (opentelemetry-instrument, or its own set-up):
            # Chorus's spans go where the rest of its spans go.
            return current.get_tracer(INSTRUMENTATION)
        # Chorus's own, not installed as the global one: a producer that sets its provider
        # later still can. The SDK reads the OTEL_* variables (endpoint, headers, sampler,
        # OTEL_BSP_* batching) itself.
        provider = TracerProvider(resource=_resource())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._owned.append(provider)
        return provider.get_tracer(INSTRUMENTATION)

    def flush(self, timeout_millis: int = 10_000) -> None:
        for provider in self._owned:
            provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        owned, self._owned, self._tracer = self._owned, [], None
        for provider in owned:
            provider.shutdown()

    # -- spans ----------------------------------------------------------------------------

    @contextmanager
    def span(
        self,
        name: str,
        kind: SpanKind,
        attributes: Attributes,
        *,
        context: otel_context.Context | None = None,
        links: list[Link] | None = None,
        model: str | None = None,
    ) -> Iterator[Recorder]:
        """A span made current for the block; an exception marks it failed and propagates."""
        with self.tracer().start_as_current_span(
            name, context=context, kind=kind, attributes=attributes, links=links
        ) as span:
            recorder = Recorder(span) if model is None else ChatRecorder(span, model)
            try:
                yield recorder
            except BaseException as exc:
                recorder.fail(type(exc).__qualname__, str(exc))
                raise

    def submit(
        self, task_id: str, workflow: str, message_id: str | None
    ) -> AbstractContextManager[Recorder]:
        attributes = {
            OPERATION: "invoke_workflow",
            "gen_ai.workflow.name": workflow,
            TASK_ID: task_id,
        }
        if message_id is not None:
            attributes[MESSAGE_ID] = message_id
        return self.span(f"invoke_workflow {workflow}", SpanKind.PRODUCER, attributes)

    def agent(
        self, agent: str, *, task_id: str, message_id: str
    ) -> AbstractContextManager[Recorder]:
        attributes = step_attributes(agent, task_id, message_id)
        return self.span(f"invoke_agent {agent}", SpanKind.INTERNAL, attributes)

    def chat(self, model: str, max_tokens: int | None) -> AbstractContextManager[ChatRecorder]:
        attributes: dict[str, str | int] = {
            OPERATION: "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
        }
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        return cast(
            "AbstractContextManager[ChatRecorder]",
            self.span(f"chat {model}", SpanKind.CLIENT, attributes, model=model),
        )

    def tool(
        self, tool: str, call_id: str, context: otel_context.Context | None
    ) -> AbstractContextManager[Recorder]:
        attributes = {
            OPERATION: "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
        return self.span(f"execute_tool {tool}", SpanKind.INTERNAL, attributes, context=context)

    def traced_tool(self, tool: str, call_id: str, run: Callable[P, R]) -> Callable[P, R]:
        parent = otel_context.get_current()

        def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            with self.tool(tool, call_id, parent) as span:
                result = run(*args, **kwargs)
                error = getattr(result, "error", None)
                if error:
                    span.fail("tool_error", str(error))
                return result

        return traced


def step_attributes(agent: str, task_id: str, message_id: str) -> dict[str, str]:
    return {OPERATION: "invoke_agent", AGENT_NAME: agent, TASK_ID: task_id, MESSAGE_ID: message_id}


def _resource() -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES as the SDK reads them, `chorus` by default,
    and the process id (a fleet runs many processes of one service)."""
    resource = Resource.create({"process.pid": os.getpid()})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource
