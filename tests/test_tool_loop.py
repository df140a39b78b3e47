"""The tool loop in the one runner: turns, tool results back, limits, and every turn billed once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import cli, metrics
from dispatcher.render import step_summary
from dispatcher.trace import tool_lines
from messages import AgentMessage, ErrorCode
from tests.tool_fixtures import Findings, ask, control, ledger, scout, stack
from workers import keys
from workers.audit_store import AuditStore
from workers.auditor import Auditor, AuditorOptions
from workers.budget import worst_prompt_tokens
from workers.claude import schema_text
from workers.runner import Delivery, run_agent
from workers.runtime import Runtime
from workers.tool_loop import first_message, resolve_tools, sized_blocks, tool_definitions
from workers.tools import ToolContext, ToolError, tool_from_function

NOTES = {"redis": "Redis keeps the task state.", "celery": "Celery moves the messages."}


def lookup(topic: str, limit: int = 3) -> str:
    """Look a topic up in the team's notes.

    Args:
        topic: What to look up, one word.
        limit: Most notes to return.
    """
    if topic not in NOTES:
        raise ToolError(f"no note on {topic!r}")
    return NOTES[topic][: limit * 100]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, str]]:
    yield from stack(tmp_path_factory)


@pytest.fixture(autouse=True)
def clean(env: tuple[Runtime, str]) -> Iterator[None]:
    yield
    control(env[1], "/_sim/scripts", "DELETE")
    control(env[1], "/_sim/tools", "DELETE")


def final(answer: str) -> dict[str, object]:
    return {"tool_input": {"answer": answer, "sources": ["notes"]}}


def test_a_three_turn_loop_records_each_call_with_its_turn_and_bills_each_turn_once(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    spec, marker = scout(tool_from_function(lookup))
    plan = [
        {"tool_calls": [{"name": "lookup", "input": {"topic": "redis"}}]},
        {"tool_calls": [{"name": "lookup", "input": {"topic": "celery", "limit": 1}}]},
        final("Redis holds state; Celery moves messages."),
    ]
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": plan})

    root, outcome = ask(runtime, spec, "How does Chorus keep state?")

    assert outcome.message.message_type == "result", outcome.message.payload
    assert Findings.model_validate(outcome.message.payload).answer.startswith("Redis holds")
    record = outcome.record
    assert record is not None
    assert record.attempts == 3
    calls = [(c["turn"], c["name"], c["input"], c["output"], c["error"]) for c in record.tool_calls]
    assert calls == [
        (1, "lookup", {"topic": "redis"}, NOTES["redis"], None),
        (2, "lookup", {"topic": "celery", "limit": 1}, NOTES["celery"], None),
    ]
    assert all(c["duration_ms"] >= 0 and not c["replayed"] for c in record.tool_calls)
    assert [t["turn"] for t in record.turns] == [1, 2, 3]
    assert [t["stop_reason"] for t in record.turns] == ["tool_use", "tool_use", "end_turn"]
    assert sum(t["cost_micro_usd"] for t in record.turns) == record.cost_micro_usd

    billed = ledger(url, root.task_id)
    assert len(billed["calls"]) == 3
    totals = runtime.state.totals(root.task_id)
    for name in ("input_tokens", "output_tokens"):
        assert int(totals[name]) == billed["totals"][name] == record.usage[name]


def test_failures_of_tools_go_back_to_the_model_as_errors_and_the_step_goes_on(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    never = threading.Event()

    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"boom: {reason}")

    def hang(seconds: int) -> str:
        """Never answers in time."""
        never.wait(30)
        return "late"

    tools = (
        tool_from_function(lookup),
        tool_from_function(explode),
        tool_from_function(hang, timeout=0.2),
    )
    spec, marker = scout(*tools)
    turn = {
        "tool_calls": [
            {"name": "explode", "input": {"reason": "test"}},
            {"name": "hang", "input": {"seconds": 9}},
            {"name": "no_such_tool", "input": {}},
            {"name": "lookup", "input": {"topic": 7}},
            {"name": "lookup", "input": {"topic": "kafka"}},
        ]
    }
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": [turn, final("ok")]})
    try:
        _root, outcome = ask(runtime, spec, "Try every tool")
    finally:
        never.set()

    assert outcome.message.message_type == "result", outcome.message.payload
    assert outcome.record is not None
    errors = [c["error"] for c in outcome.record.tool_calls]
    assert all(c["output"] is None for c in outcome.record.tool_calls)
    assert errors[0] == "RuntimeError: boom: test"
    assert errors[1] == "Tool 'hang' timed out after 0.2 s"
    assert errors[2].startswith("Unknown tool 'no_such_tool'; the known tools are: explode, hang")
    assert errors[3].startswith("Invalid arguments for tool 'lookup': topic: Input should be")
    assert errors[4] == "no note on 'kafka'"
    exported = metrics.collect(runtime.redis)
    assert 'chorus_tool_calls_total{agent="scout",tool="explode"} 1.0' in exported
    assert 'chorus_tool_errors_total{agent="scout",tool="hang"} 1.0' in exported
    assert 'chorus_tool_latency_seconds_bucket{agent="scout",le="0.1",tool="hang"} 0.0' in exported
    assert 'chorus_tool_latency_seconds_count{agent="scout",tool="hang"} 1.0' in exported


def test_the_turn_limit_ends_the_step_tool_limit_with_every_turn_paid_for(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    spec, marker = scout(tool_from_function(lookup), max_turns=2)
    again = {"tool_calls": [{"name": "lookup", "input": {"topic": "redis"}}]}
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": [again] * 3})

    root, outcome = ask(runtime, spec, "Loop forever")

    assert outcome.message.payload["code"] == ErrorCode.TOOL_LIMIT
    assert "used its 2 model turns" in outcome.message.payload["message"]
    assert outcome.record is not None
    assert outcome.record.attempts == 2
    assert len(outcome.record.tool_calls) == 1  # the last turn's calls are not run
    assert runtime.state.task_info(root.task_id)["status"] == "failed"
    billed = ledger(url, root.task_id)
    assert len(billed["calls"]) == 2
    assert billed["totals"]["output_tokens"] == outcome.record.usage["output_tokens"]


def test_parallel_tool_use_blocks_each_get_their_result_and_tokens_match_the_bill(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    seen: list[str] = []
    lock = threading.Lock()

    def weather(city: str) -> str:
        """Current weather in a city."""
        with lock:
            seen.append(f"weather {city}")
        return "mild"

    def clock(timezone: str, context: ToolContext) -> str:
        """Local time in a timezone."""
        with lock:
            seen.append(f"clock {context.tool_use_id}")
        return "14:05"

    control(url, "/_sim/tools", "POST", {"turns": 2, "parallel": 2})
    spec, _marker = scout(tool_from_function(weather), tool_from_function(clock))

    root, outcome = ask(runtime, spec, "What is the weather and the local time in Paris?")

    # The simulator answers 400 to a turn that leaves a tool_use without its tool_result.
    assert outcome.message.message_type == "result", outcome.message.payload
    record = outcome.record
    assert record is not None
    assert record.attempts == 3
    assert sorted(c["turn"] for c in record.tool_calls) == [1, 1, 2, 2]
    assert len({c["tool_use_id"] for c in record.tool_calls}) == 4
    assert len(seen) == 4
    billed = ledger(url, root.task_id)["totals"]
    totals = runtime.state.totals(root.task_id)
    for name in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
        assert int(totals[name]) == billed[name] == record.usage[name]
    assert int(totals["cost_micro_usd"]) == record.cost_micro_usd


def test_an_invalid_final_answer_gets_the_stricter_retry_inside_the_loop(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    spec, marker = scout(tool_from_function(lookup))
    plan = [
        {"tool_calls": [{"name": "lookup", "input": {"topic": "redis"}}]},
        {"tool_input": {"answer": ""}},
        final("fixed"),
    ]
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": plan})

    _root, outcome = ask(runtime, spec, "Answer badly first")

    assert outcome.message.payload["answer"] == "fixed"
    assert outcome.record is not None
    assert outcome.record.attempts == 3


def test_the_budget_holds_each_turn_and_refuses_the_turn_that_does_not_fit(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    spec, marker = scout(tool_from_function(lookup))
    plan = [{"tool_calls": [{"name": "lookup", "input": {"topic": "redis"}}]}, final("done")]
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": plan})
    root = AgentMessage.root(recipient=spec.name, payload={"text": "Budget check"})
    tools = resolve_tools(spec.tools)
    first = sized_blocks([first_message(["Budget check"])], tool_definitions(tools))
    worst_first = worst_prompt_tokens(spec.system_prompt, first, schema_text(Findings))
    # Room for the first turn's worst case, not for the second's on top of what the first spent.
    runtime.state.submit(
        root.task_id,
        pattern="route",
        root_message=root.to_dict(),
        budget_tokens=worst_first + spec.max_tokens + 20,
    )
    outcome = run_agent(runtime, spec, root.to_dict(), Delivery())

    assert outcome.message.payload["code"] == ErrorCode.BUDGET_EXCEEDED, outcome.message.payload
    assert outcome.record is not None
    assert outcome.record.attempts == 1
    assert len(ledger(url, root.task_id)["calls"]) == 1
    budget: dict[bytes, bytes] = runtime.redis.hgetall(keys.budget(root.task_id))  # type: ignore[assignment]
    assert int(budget[b"tokens"]) == sum(outcome.record.usage.values())
    assert not [name for name in budget if name.startswith(b"r:")]  # no hold left behind


def test_trace_and_json_show_each_turn_and_its_tool_calls_under_the_step(
    env: tuple[Runtime, str],
) -> None:
    runtime, url = env
    spec, marker = scout(tool_from_function(lookup))
    plan = [
        {"tool_calls": [{"name": "lookup", "input": {"topic": "redis"}}]},
        {"tool_calls": [{"name": "lookup", "input": {"topic": "kafka"}}]},
        final("Redis"),
    ]
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": plan})
    _root, outcome = ask(runtime, spec, "Trace me")
    assert outcome.record is not None

    summary = step_summary(outcome.record)
    assert [c["name"] for c in summary["tool_calls"]] == ["lookup", "lookup"]
    assert {"name", "input", "output", "error", "duration_ms", "turn"} <= set(
        summary["tool_calls"][0]
    )
    lines = tool_lines({"turns": outcome.record.turns, "tool_calls": outcome.record.tool_calls})
    assert lines[0].startswith("turn 1: tool_use, ")
    assert lines[1].startswith('  tool lookup({"topic": "redis"}) → Redis keeps the task state.')
    assert lines[3].startswith('  tool lookup({"topic": "kafka"}) error: no note on \'kafka\'')
    assert lines[4].startswith("turn 3: end_turn, ")


def test_chorus_audit_tool_lists_each_call_of_a_tool_from_the_sql_trail(
    env: tuple[Runtime, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, url = env
    spec, marker = scout(tool_from_function(lookup))
    plan = [
        {"tool_calls": [{"name": "lookup", "input": {"topic": "celery"}}]},
        {"tool_calls": [{"name": "lookup", "input": {"topic": "kafka"}}]},
        final("Celery"),
    ]
    control(url, "/_sim/scripts", "POST", {"match": marker, "responses": plan})
    root, _outcome = ask(runtime, spec, "Audit me")
    database = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = AuditStore(database)
    Auditor(runtime.redis, store, AuditorOptions()).drain()

    calls = store.tool_calls("lookup", task_id=root.task_id)
    assert [(c["turn"], c["input"], c["output"], c["error"]) for c in calls] == [
        (1, '{"topic": "celery"}', NOTES["celery"], None),
        (2, '{"topic": "kafka"}', None, "no note on 'kafka'"),
    ]
    assert all(c["agent"] == "scout" and c["duration_ms"] >= 0 for c in calls)

    monkeypatch.setenv("CHORUS_DATABASE_URL", database)
    assert cli.main(["audit", "--tool", "lookup", "--task", root.task_id, "--errors"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1 call(s) of lookup, 1 failed"
    assert 'lookup({"topic": "kafka"}) error: no note on \'kafka\'' in out[0]
