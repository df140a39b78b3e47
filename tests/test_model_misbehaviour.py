"""When the model answers badly, the task ends with an explicit error; it never crashes a worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import redis

from dispatcher import Dispatcher
from workers import keys
from workers.registry import PRIORITY_LEVELS

Script = Callable[[str, list[dict[str, Any]]], None]


def unique(text: str) -> str:
    return f"{text} [case {uuid.uuid4().hex[:8]}]"


def test_router_naming_an_unregistered_agent_ends_as_unknown_agent(
    dispatcher: Dispatcher, script_model: Script, redis_url: str
) -> None:
    text = unique("Translate this sentence into French")
    rogue = {"agent": "translator", "priority": "high", "reasoning": "It is a translation."}
    script_model(text, [{"tool_input": rogue}, {"tool_input": rogue}])

    handle = dispatcher.submit(text)
    outcome = handle.wait(60)

    assert outcome.status == "failed"
    assert outcome.message.message_type == "error"
    assert outcome.result["code"] == "unknown_agent"
    assert outcome.result["agent"] == "router"
    assert "translator" in outcome.result["raw_output"]
    (step,) = handle.trace()
    assert step.attempts == 2  # one stricter retry, then the error
    dead = redis.Redis.from_url(redis_url).xrevrange(keys.DEAD_LETTERS, count=20)
    assert any(fields[b"task_id"].decode() == handle.task_id for _, fields in dead)


def test_prose_instead_of_json_twice_ends_as_invalid_output_keeping_the_raw_text(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Summarize the plot of Hamlet")
    prose = "Sure! Hamlet is a play about a prince who hesitates."
    script_model(text, [{"text": prose}, {"text": prose}])

    outcome = dispatcher.submit(text).wait(60)

    assert outcome.status == "failed"
    assert outcome.result["code"] == "invalid_output"
    assert outcome.result["raw_output"] == prose
    assert "not JSON" in outcome.result["message"]


def test_one_stricter_retry_recovers_from_a_schema_mismatch(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Summarize the history of Redis")
    wrong = {"agent": "summarizer", "priority": "urgent!!", "reasoning": "Summaries."}
    script_model(text, [{"tool_input": wrong}])

    handle = dispatcher.submit(text)
    outcome = handle.wait(60)

    assert outcome.status == "done"
    router = handle.trace()[0]
    assert router.attempts == 2
    assert outcome.input_tokens == sum(s.usage["input_tokens"] for s in handle.trace())


def test_route_priority_becomes_the_specialists_celery_priority(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Summarize the incident report now")
    urgent = {"agent": "summarizer", "priority": "high", "reasoning": "Production is down."}
    script_model(text, [{"tool_input": urgent}])

    handle = dispatcher.submit(text, priority="low")
    handle.wait(60)

    router, specialist = handle.trace()
    assert router.priority == PRIORITY_LEVELS["low"]
    assert specialist.priority == PRIORITY_LEVELS["high"]


def test_output_cut_at_max_tokens_is_retried_then_reported(
    dispatcher: Dispatcher, inject_faults: Callable[..., None]
) -> None:
    inject_faults(schedule=["truncate", "truncate"])

    handle = dispatcher.submit(unique("Summarize the quarterly numbers"))
    outcome = handle.wait(60)

    assert outcome.status == "failed"
    assert outcome.result["code"] == "invalid_output"
    assert "cut off at max_tokens" in outcome.result["message"]
    assert handle.trace()[0].attempts == 2


def test_one_truncated_answer_is_recovered_by_the_stricter_retry(
    dispatcher: Dispatcher, inject_faults: Callable[..., None]
) -> None:
    inject_faults(schedule=["truncate"])

    handle = dispatcher.submit(unique("Summarize the meeting notes"))

    assert handle.wait(60).status == "done"
    assert handle.trace()[0].attempts == 2


def test_a_retried_call_counts_on_the_message_and_shows_in_the_trace(
    dispatcher: Dispatcher, inject_faults: Callable[..., None]
) -> None:
    inject_faults(schedule=["rate_limit", "overloaded"], retry_after=0.05)

    handle = dispatcher.submit(unique("Summarize the release notes"))
    outcome = handle.wait(60)

    assert outcome.status == "done"
    router = handle.trace()[0]
    assert router.retries == 2
    assert [event["status"] for event in router.retry_log] == [429, 529]
    assert router.message["retry_count"] == 2
    assert outcome.retries == 2
