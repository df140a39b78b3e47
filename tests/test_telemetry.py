"""OpenTelemetry traces: one task is one trace across the producer and worker processes.

Real parts only: a private Redis, the simulator, `celery worker` subprocesses exporting over
OTLP/HTTP (the official exporter) to a receiver in this process (tests/otlp_receiver.py).
Parent links are checked against the message tree the task's own step records describe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import Dispatcher, TaskHandle
from dispatcher.embedded import (
    ManagedProcess,
    start_redis,
    start_simulator,
    start_worker,
    stop_all,
    wait_until,
)
from tests.conftest import TEST_API_KEY
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from workers import telemetry
from workers.app import create_app
from workers.settings import Settings
from workers.state import StepRecord
from workers.tool_exec import ToolCall, run_tool_calls
from workers.tools import ToolContext, ToolError, tool_from_function

OTEL_ON = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY"}
WORKER_GROUPS = (
    ["research"],
    ["research"],
    ["merger"],
    ["orchestrator", "synthesizer", "drafter", "critic", "router", "code_review", "summarizer"],
)
"""Two research processes (one thread each, so a fan-out spreads over both), the merger, and
one process for the agents of the run-time fan-out, the pipeline and routing."""


def _without_otel(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


# -- helpers in one process ------------------------------------------------------------


def _add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _refuse(reason: str) -> str:
    """Always refuses."""
    raise ToolError(f"refused: {reason}")


def test_tool_calls_are_execute_tool_spans_under_the_step_across_the_tool_threads(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry.shutdown()  # this test's own settings, whatever ran before it
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.url}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "chorus-tools-test")
    assert telemetry.install()
    tools = {t.name: t for t in (tool_from_function(_add), tool_from_function(_refuse))}
    calls = [
        ToolCall("toolu_add", "_add", {"a": 2, "b": 3}),
        ToolCall("toolu_refuse", "_refuse", {"reason": "no"}),
    ]
    try:
        with telemetry.agent_span("research", task_id="tools-task", message_id="m-1"):
            outcomes = run_tool_calls(
                tools,
                calls,
                lambda c: ToolContext(
                    task_id="tools-task", message_id="m-1", tool_use_id=c.id, agent="research"
                ),
            )
    finally:
        telemetry.shutdown()  # flushes
    assert [o.output for o in outcomes] == ["5", None]

    spans = [s for s in receiver.spans if s.resource.get("service.name") == "chorus-tools-test"]
    (step,) = [s for s in spans if s.name == "invoke_agent research"]
    tool_spans = {s.attributes["gen_ai.tool.call.id"]: s for s in spans if s.parent_id}
    assert set(tool_spans) == {"toolu_add", "toolu_refuse"}
    for call in calls:
        span = tool_spans[call.id]
        assert span.name == f"execute_tool {call.name}"
        assert span.parent_id == step.span_id
        assert span.trace_id == step.trace_id
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["gen_ai.tool.name"] == call.name
    assert tool_spans["toolu_add"].status != 2
    assert tool_spans["toolu_refuse"].status == 2
    assert tool_spans["toolu_refuse"].attributes["error.type"] == "tool_error"


@pytest.fixture(scope="module")
def traced_env(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[tuple[dict[str, str], Path]]:
    """A private Redis and a simulator that takes 0.3 s a call; OTEL pointing at `receiver`."""
    log_dir = tmp_path_factory.mktemp("telemetry")
    redis_process, redis_url = start_redis(log_dir)
    simulator, simulator_url = start_simulator(log_dir, latency=0.3)
    env = _without_otel(
        {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    )
    env.update(
        CHORUS_REDIS_URL=redis_url,
        CHORUS_DATABASE_URL=f"sqlite:///{log_dir / 'audit.sqlite3'}",
        ANTHROPIC_BASE_URL=simulator_url,
        ANTHROPIC_API_KEY=TEST_API_KEY,
        HTTPS_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="50",  # milliseconds: spans leave almost at once
    )
    yield env, log_dir
    simulator.stop()
    redis_process.stop()


@pytest.fixture(scope="module")
def fleet(traced_env: tuple[dict[str, str], Path]) -> Iterator[Dispatcher]:
    """Worker processes with tracing on, and a producer (this process) with it on too."""
    env, log_dir = traced_env
    workers: list[ManagedProcess] = [
        start_worker(group, env, log_dir, concurrency=1 if group == ["research"] else 4)
        for group in WORKER_GROUPS
    ]
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            patch.delenv(key)
        for key in OTEL_ON:
            patch.setenv(key, env[key])
        app = create_app(Settings.from_env(env))
        assert telemetry.active()
        dispatcher = Dispatcher(app)

        def ready() -> bool:
            dead = [w for w in workers if not w.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} died:\n{dead[0].log_tail()}")
            replies = app.control.inspect(timeout=0.5).active_queues() or {}
            consumers = [q["name"] for queues in replies.values() for q in queues]
            wanted = {f"agent.{name}" for group in WORKER_GROUPS for name in group}
            return consumers.count("agent.research") >= 2 and wanted <= set(consumers)

        wait_until(ready, timeout=90, what="traced workers")
        try:
            yield dispatcher
        finally:
            telemetry.shutdown()
            stop_all(workers)


# -- what a task's trace must look like --------------------------------------------------


def _task_spans(
    receiver: OtlpReceiver, handle: TaskHandle
) -> tuple[list[StepRecord], dict[str, Any]]:
    """Wait until the task's producer span, a step span per step and a chat span per model
    call have arrived; return the steps and the spans of the task's trace by kind."""
    steps = handle.trace()
    calls = sum(step.attempts for step in steps)
    task_id = handle.task_id

    def grouped(spans: list[ReceivedSpan]) -> dict[str, Any]:
        roots = [
            s
            for s in spans
            if s.attributes.get("chorus.task_id") == task_id
            and s.attributes.get("gen_ai.operation.name") == "invoke_workflow"
        ]
        trace_id = roots[0].trace_id if roots else None
        in_trace = [s for s in spans if s.trace_id == trace_id]
        return {
            "root": roots,
            "trace": in_trace,
            "steps": [s for s in in_trace if s.name.startswith("invoke_agent ")],
            "chats": [s for s in in_trace if s.name.startswith("chat ")],
            "tagged": [s for s in spans if s.attributes.get("chorus.task_id") == task_id],
        }

    def complete(spans: list[ReceivedSpan]) -> bool:
        found = grouped(spans)
        return bool(found["root"]) and (len(found["steps"]), len(found["chats"])) == (
            len(steps),
            calls,
        )

    spans = receiver.wait_for(complete, what=f"the spans of task {task_id}")
    return steps, grouped(spans)


def _check_trace(steps: list[StepRecord], found: dict[str, Any]) -> dict[str, ReceivedSpan]:
    """One trace, one step span per step with parents as in the message tree, chat spans
    under their steps with the step's tokens and cost. Returns step spans by message id."""
    (root,) = found["root"]
    assert {s.trace_id for s in found["tagged"]} == {root.trace_id}, "one trace per task"
    assert root.parent_id == ""
    assert root.kind == "producer"
    assert root.resource["process.pid"] == os.getpid()
    assert root.resource["service.name"] == "chorus"

    by_message = {s.attributes["chorus.message_id"]: s for s in found["steps"]}
    assert sorted(by_message) == sorted(step.input_message_id for step in steps)
    made_by = {step.message["message_id"]: step.input_message_id for step in steps}
    for step in steps:
        span = by_message[step.input_message_id]
        assert span.name == f"invoke_agent {step.agent}"
        assert span.kind == "consumer"
        assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert span.attributes["gen_ai.agent.name"] == step.agent
        assert span.attributes["chorus.task_id"] == step.task_id
        # The parent is the step that wrote this step's input (or its parent message, for
        # a branch of a fan-out planned at run time), else the producer.
        parent_message = (step.input_message or {}).get("parent_message_id")
        maker = made_by.get(step.input_message_id) or made_by.get(parent_message)
        expected = by_message[maker].span_id if maker else root.span_id
        assert span.parent_id == expected, f"{step.agent} step's parent"

        chats = [c for c in found["chats"] if c.parent_id == span.span_id]
        assert len(chats) == step.attempts
        for chat in chats:
            assert chat.name == f"chat {step.model}"
            assert chat.kind == "client"
            assert chat.attributes["gen_ai.operation.name"] == "chat"
            assert chat.attributes["gen_ai.request.model"] == step.model
            assert chat.attributes["gen_ai.provider.name"] == "anthropic"
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            attribute = "gen_ai.usage." + key.replace("cache_read_", "cache_read.").replace(
                "cache_creation_", "cache_creation."
            )
            assert sum(c.attributes[attribute] for c in chats) == step.usage[key], key
        assert step.usage["input_tokens"] > 0
        cost = sum(c.attributes["chorus.cost_usd"] for c in chats)
        assert cost == pytest.approx(step.cost_micro_usd / 1_000_000)
    return by_message


def _published_by(span: ReceivedSpan) -> set[str]:
    return {sid for _tid, sid, attrs in span.links if attrs.get("chorus.link") == "published_by"}


def test_a_fan_out_is_one_trace_across_producer_and_workers(
    fleet: Dispatcher, receiver: OtlpReceiver
) -> None:
    handle = fleet.submit("Should we move the billing service to a queue?", pattern="fanout")
    assert handle.wait(90).ok
    steps, found = _task_spans(receiver, handle)
    assert sorted(step.agent for step in steps) == ["merger", "research", "research", "research"]
    by_message = _check_trace(steps, found)

    research = [by_message[s.input_message_id] for s in steps if s.agent == "research"]
    (merger,) = [by_message[s.input_message_id] for s in steps if s.agent == "merger"]
    # The merger's input is the producer's root message: its parent is the producer's span.
    # The research step that finished last published it, which its link says.
    assert merger.parent_id == found["root"][0].span_id
    assert len(_published_by(merger)) == 1
    assert _published_by(merger) <= {s.span_id for s in research}
    processes = {s.resource["process.pid"] for s in found["trace"]}
    assert len({s.resource["process.pid"] for s in research}) == 2, "both research workers"
    assert len(processes) == 4, "the producer, two research workers and the merger"


def test_a_fan_out_planned_at_run_time_hangs_under_the_step_that_planned_it(
    fleet: Dispatcher, receiver: OtlpReceiver
) -> None:
    """`self.replace` with a chord: branches and the synthesizer are children of the
    orchestrator's span, because their messages are the orchestrator's."""
    handle = fleet.submit("Plan a data-retention review.", pattern="orchestrate", max_subtasks=2)
    assert handle.wait(90).ok
    steps, found = _task_spans(receiver, handle)
    by_message = _check_trace(steps, found)
    (orchestrator,) = [by_message[s.input_message_id] for s in steps if s.agent == "orchestrator"]
    (synthesizer,) = [by_message[s.input_message_id] for s in steps if s.agent == "synthesizer"]
    research = [by_message[s.input_message_id] for s in steps if s.agent == "research"]
    assert research
    assert {s.parent_id for s in [*research, synthesizer]} == {orchestrator.span_id}
    assert _published_by(synthesizer) <= {s.span_id for s in research}


def test_each_step_of_a_pipeline_is_the_child_of_the_step_before_it(
    fleet: Dispatcher, receiver: OtlpReceiver
) -> None:
    """A chain's next link is published by the step before it, inside that step's span."""
    handle = fleet.submit("Draft a note on the queue migration.", pattern="pipeline")
    assert handle.wait(90).ok
    steps, found = _task_spans(receiver, handle)
    by_message = _check_trace(steps, found)
    spans = [by_message[s.input_message_id] for s in sorted(steps, key=lambda s: s.started_at)]
    assert [s.attributes["gen_ai.agent.name"] for s in spans] == ["research", "drafter", "critic"]
    assert spans[0].parent_id == found["root"][0].span_id
    assert [s.parent_id for s in spans[1:]] == [s.span_id for s in spans[:-1]]


def test_a_routed_specialist_is_the_child_of_the_router(
    fleet: Dispatcher, receiver: OtlpReceiver
) -> None:
    """The router replaces itself with the specialist's task, sent inside the router's span."""
    handle = fleet.submit("Summarise the queue migration plan.", pattern="route")
    assert handle.wait(90).ok
    steps, found = _task_spans(receiver, handle)
    by_message = _check_trace(steps, found)
    (router,) = [by_message[s.input_message_id] for s in steps if s.agent == "router"]
    (specialist,) = [by_message[s.input_message_id] for s in steps if s.agent != "router"]
    assert router.parent_id == found["root"][0].span_id
    assert specialist.parent_id == router.span_id


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "chorus"}, False),
    ],
)
def test_only_an_otlp_endpoint_turns_tracing_on(env: dict[str, str], on: bool) -> None:
    assert telemetry.wanted(env) is on


NO_COST_PROBE = """
import json, sys
from celery import signals
from dispatcher import Dispatcher
from workers import telemetry
from workers.app import create_app

app = create_app()
run = lambda: 1
with (
    telemetry.submit_span("t", "fanout") as submit,
    telemetry.agent_span("research", task_id="t", message_id="m") as step,
    telemetry.chat_span("claude-haiku-5-5") as chat,
    telemetry.tool_span("lookup", "toolu_1") as tool,
):
    chat.response(None, headers={}, retries=(), prices={})
    same = submit is step is chat is tool is telemetry.NOOP
receivers = [signal.receivers for signal in (signals.before_task_publish, signals.task_prerun)]
print(json.dumps({
    "active": telemetry.active(),
    "same_noop": same,
    "same_manager": telemetry.chat_span("a") is telemetry.tool_span("b", "c"),
    "traced_tool_is_run": telemetry.traced_tool("lookup", "toolu_1", run) is run,
    "ours_connected": "chorus.telemetry" in repr(receivers),
    "modules": sorted(m for m in sys.modules if m.startswith(
        ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.propagate",
         "workers.telemetry_"))),
}))
"""


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}],
    ids=["no OTEL variables", "OTEL_SDK_DISABLED"],
)
def test_without_otel_nothing_is_imported_or_connected_and_helpers_are_one_noop(
    env: dict[str, str], tmp_path: Path
) -> None:
    """redis-py imports opentelemetry.sdk.metrics by itself when the SDK is installed; the
    tracing side (SDK trace, exporter, propagators, our span modules) must stay unloaded."""
    probe_env = _without_otel(dict(os.environ)) | env
    probe_env["CHORUS_REDIS_URL"] = "redis://127.0.0.1:9/0"  # never contacted
    answer = subprocess.run(
        [sys.executable, "-c", NO_COST_PROBE],
        env=probe_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    report = json.loads(answer.stdout.strip().splitlines()[-1])
    assert report == {
        "active": False,
        "same_noop": True,
        "same_manager": True,
        "traced_tool_is_run": True,
        "ours_connected": False,
        "modules": [],
    }
