"""The step scripts on their own (begin_step.lua, record_step.lua), against a real Redis and no
workers: each input message is stored once, its review or dead letter lands in the same call or
not at all, a racing second delivery still pays, and the per-agent counters add up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from messages.status import StepStatus, TaskStatus
from tests.private_redis import private_redis
from workers import keys
from workers.deadletters import DEAD_LETTER_BODY_LIMIT, DeadLetter
from workers.reviews import REVIEW_TTL
from workers.state import StepRecord, TaskState

TASK = "t-steps"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


@pytest.fixture
def state(client: redis.Redis) -> TaskState:
    client.flushdb()
    state = TaskState(client, ttl=60)
    state.submit(TASK, pattern="consensus", root_message={"message_id": "root"})
    return state


def record(number: int, *, cost: int = 5, agent: str = "analyst", **fields: Any) -> StepRecord:
    values: dict[str, Any] = {
        "task_id": TASK,
        "input_message_id": f"in-{number}",
        "agent": agent,
        "status": StepStatus.OK,
        "message": {"message_id": f"out-{number}", "payload": {"summary": "fine"}},
        "model": "claude-haiku-5-5",
        "attempts": 1,
        "usage": {"input_tokens": 10, "output_tokens": 3},
        "cost_micro_usd": cost,
        "finished_at": "2026-11-24T14:32:00+00:00",
        **fields,
    }
    return StepRecord(**values)


def audit_kinds(client: redis.Redis) -> list[str]:
    return [fields[b"kind"].decode() for _, fields in client.xrange(keys.AUDIT)]


def info(state: TaskState) -> dict[str, str]:
    return state.task_info(TASK)


# -- begin and record: once per input message --------------------------------------------------


def test_a_step_is_stored_once_and_a_redelivery_gets_the_stored_record_back(
    state: TaskState, client: redis.Redis
) -> None:
    assert state.begin_step(TASK, "in-1", "analyst").done is None
    first = record(1)
    assert state.record_step(first, final_status=None) is first

    again = state.begin_step(TASK, "in-1", "analyst")
    assert again.done == first
    assert client.hlen(keys.board(TASK)) == client.xlen(keys.trace(TASK)) == 1
    assert info(state)["steps"] == "1"
    assert info(state)["status"] == TaskStatus.RUNNING


def test_a_final_status_ends_the_task_but_never_replaces_budget_exceeded(
    state: TaskState, client: redis.Redis
) -> None:
    state.record_step(record(1), final_status=TaskStatus.DONE)
    assert info(state)["status"] == TaskStatus.DONE
    assert info(state)["final_message_id"] == "out-1"

    client.hset(keys.task(TASK), "status", TaskStatus.BUDGET_EXCEEDED)
    state.record_step(record(2), final_status=TaskStatus.FAILED)
    assert info(state)["status"] == TaskStatus.BUDGET_EXCEEDED


# -- the counters of a loop refusal, a stopped task, a race ------------------------------------


def test_a_loop_refusal_takes_the_step_off_queued_and_its_record_off_running(
    state: TaskState,
) -> None:
    state.plan(TASK, {"analyst": 2}, key="fan-out")
    assert state.begin_step(TASK, "in-1", "analyst", "same-input").loop_of is None
    loop = state.begin_step(TASK, "in-2", "analyst", "same-input")

    assert loop.loop_of == "in-1"
    assert info(state)["queued:analyst"] == "0"
    assert info(state)["running:analyst"] == "2"
    state.record_step(record(1), final_status=None)
    state.record_step(record(2, status=StepStatus.ERROR), final_status=None)
    assert info(state)["running:analyst"] == "0"


def test_a_step_skipped_because_the_budget_stopped_the_task_leaves_no_counter_behind(
    state: TaskState, client: redis.Redis
) -> None:
    state.plan(TASK, {"critic": 1}, key="revision")
    client.hset(keys.task(TASK), "status", TaskStatus.BUDGET_EXCEEDED)

    begin = state.begin_step(TASK, "in-7", "critic")
    state.record_step(
        record(7, agent="critic", status=StepStatus.SKIPPED),
        final_status=TaskStatus.BUDGET_EXCEEDED,
    )

    assert begin.stopped == TaskStatus.BUDGET_EXCEEDED
    assert info(state)["queued:critic"] == "0"
    assert info(state)["running:critic"] == "0"


def test_two_racing_deliveries_both_pay_but_store_one_step(
    state: TaskState, client: redis.Redis
) -> None:
    """Both called the model (the provider billed both): the task's cost says so, its steps,
    board and trace do not double, and `duplicates` records that it happened."""
    state.begin_step(TASK, "in-1", "analyst")
    state.begin_step(TASK, "in-1", "analyst")
    winner, loser = record(1, cost=5), record(1, cost=8, message={"message_id": "out-late"})

    assert state.record_step(winner, final_status=TaskStatus.DONE) is winner
    assert state.record_step(loser, final_status=TaskStatus.FAILED) == winner

    totals = info(state)
    assert totals["cost_micro_usd"] == "13"
    assert totals["input_tokens"] == "20"
    assert totals["output_tokens"] == "6"
    assert totals["steps"] == "1"
    assert totals["duplicates"] == "1"
    assert totals["duplicate_cost_micro_usd"] == "8"
    assert totals["status"] == TaskStatus.DONE
    assert totals["running:analyst"] == "0"
    assert client.hlen(keys.board(TASK)) == client.xlen(keys.trace(TASK)) == 1
    assert audit_kinds(client).count("step") == audit_kinds(client).count("duplicate_step") == 1
    metrics = client.hgetall(keys.METRICS)
    assert metrics[b"cost_micro_usd|analyst|claude-haiku-5-5"] == b"13"
    assert metrics[b"steps|analyst|claude-haiku-5-5|ok"] == b"1"


def test_the_same_call_sent_again_after_its_reply_was_lost_changes_nothing(
    state: TaskState, client: redis.Redis
) -> None:
    """A Redis restart can drop the reply of a call that ran; the client sends it again. That
    is not a second delivery: nothing is paid, counted, audited or settled twice."""
    state.begin_step(TASK, "in-1", "analyst")
    first = record(1, cost=5)
    assert state.record_step(first, final_status=TaskStatus.DONE) is first
    before = (info(state), client.hgetall(keys.METRICS), audit_kinds(client))

    assert state.record_step(first, final_status=TaskStatus.DONE) == first

    assert (info(state), client.hgetall(keys.METRICS), audit_kinds(client)) == before
    assert "duplicates" not in info(state)
    assert client.hlen(keys.board(TASK)) == client.xlen(keys.trace(TASK)) == 1


# -- the outcome rides with the record ---------------------------------------------------------


def test_a_review_opens_in_the_call_that_stores_the_step(
    state: TaskState, client: redis.Redis
) -> None:
    state.record_step(record(1), final_status=TaskStatus.NEEDS_REVIEW, review=True)

    assert [task for task, _ in state.pending_reviews()] == [TASK]
    for key in (keys.task(TASK), keys.board(TASK), keys.trace(TASK)):
        assert client.ttl(key) > REVIEW_TTL - 60
    assert audit_kinds(client)[-2:] == ["step", "review_opened"]

    state.record_step(record(1), final_status=TaskStatus.NEEDS_REVIEW, review=True)
    assert audit_kinds(client).count("review_opened") == 1  # a duplicate opens nothing


def test_no_review_opens_for_a_task_whose_budget_stopped_it(
    state: TaskState, client: redis.Redis
) -> None:
    client.hset(keys.task(TASK), "status", TaskStatus.BUDGET_EXCEEDED)
    state.record_step(record(1), final_status=TaskStatus.NEEDS_REVIEW, review=True)
    assert state.pending_reviews() == []
    assert "review_opened" not in audit_kinds(client)


def test_a_decision_ends_the_wait_once(state: TaskState) -> None:
    state.record_step(record(1), final_status=TaskStatus.NEEDS_REVIEW, review=True)
    assert state.decide_review(TASK, approve=False, note="too risky", reviewer="ana")
    assert not state.decide_review(TASK, approve=True, note="", reviewer="bo")
    assert info(state)["status"] == TaskStatus.REJECTED
    assert info(state)["review_note"] == "too risky"
    assert state.pending_reviews() == []


def test_an_error_steps_dead_letter_is_written_with_its_record_and_only_once(
    state: TaskState, client: redis.Redis
) -> None:
    letter = DeadLetter(
        agent="analyst",
        code="invalid_output",
        error="model output rejected twice",
        body={"message_id": "in-1", "payload": {"text": "hi"}},
        options={"final": True},
    )
    failed = record(1, status=StepStatus.ERROR, message={"payload": {"code": "invalid_output"}})

    state.record_step(failed, final_status=TaskStatus.FAILED, dead_letter=letter)
    state.record_step(failed, final_status=TaskStatus.FAILED, dead_letter=letter)

    letters = client.xrange(keys.DEAD_LETTERS)
    assert len(letters) == 1
    fields = {k.decode(): v.decode() for k, v in letters[0][1].items()}
    assert fields["task_id"] == TASK
    assert fields["code"] == "invalid_output"
    assert json.loads(fields["body"]) == {"message_id": "in-1", "payload": {"text": "hi"}}
    assert json.loads(fields["options"]) == {"final": True}
    assert audit_kinds(client).count("dead_letter") == 1
    errors = client.hget(keys.METRICS, "errors|analyst|invalid_output")
    assert errors == b"1"  # the duplicate is no second error either


def test_a_dead_letter_cut_short_is_not_retryable(state: TaskState, client: redis.Redis) -> None:
    body = "x" * (DEAD_LETTER_BODY_LIMIT + 1)
    state.dead_letter(task_id=TASK, agent="a", code="c", error="e", body=body, options={})
    ((_, fields),) = client.xrange(keys.DEAD_LETTERS)
    assert len(fields[b"body"]) == DEAD_LETTER_BODY_LIMIT
    assert b"options" not in fields


def test_was_started_sees_a_begun_or_finished_message(state: TaskState) -> None:
    assert not state.was_started(TASK, "in-1")
    state.begin_step(TASK, "in-1", "analyst", "fp-1")
    assert state.was_started(TASK, "in-1")
    state.record_step(record(2), final_status=None)
    assert state.was_started(TASK, "in-2")


def test_a_continuation_is_counted_once_however_often_a_replay_sends_it(
    state: TaskState, client: redis.Redis
) -> None:
    assert state.plan(TASK, {"research": 3, "synthesizer": 1}, key="plan-message")
    assert not state.plan(TASK, {"research": 3, "synthesizer": 1}, key="plan-message")
    counters = client.hgetall(keys.task(TASK))
    assert counters[b"queued:research"] == b"3"
    assert counters[b"queued:synthesizer"] == b"1"


def test_a_step_redelivered_before_its_record_is_counted_once(
    state: TaskState, client: redis.Redis
) -> None:
    """kill -9 between begin and record: the redelivery begins again, and the counters still
    end at zero, without taking another step of the same agent off them."""
    state.plan(TASK, {"analyst": 2}, key="two-analysts")
    assert state.begin_step(TASK, "in-1", "analyst").done is None
    assert state.begin_step(TASK, "in-1", "analyst").done is None  # the redelivery
    assert state.begin_step(TASK, "in-2", "analyst").done is None
    counters = client.hgetall(keys.task(TASK))
    assert counters[b"running:analyst"] == b"2"
    assert counters[b"queued:analyst"] == b"0"
    state.record_step(record(1), final_status=None)
    state.record_step(record(2), final_status=None)
    assert client.hget(keys.task(TASK), "running:analyst") == b"0"
    marks = [f for f in client.hkeys(keys.task(TASK)) if f.startswith((b"begun:", b"dequeued:"))]
    assert not marks
