"""Guards that hold across the fleet: budgets, loops, the retry cap and the shared rate limiter,
each checked with real worker processes sharing one Redis."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_simulator, start_worker, stop_all, wait_until
from messages import AgentMessage, MessageType
from tests.helpers import billed_micro_usd, chorus, with_db
from workers import keys
from workers.app import create_app
from workers.registry import AGENTS
from workers.settings import Settings


def send(dispatcher: Dispatcher, message: AgentMessage) -> AgentMessage:
    spec = AGENTS[message.recipient]
    result = dispatcher.app.send_task(spec.task_name, args=[message.to_dict()], queue=spec.queue)
    return AgentMessage.from_dict(result.get(timeout=60))


# -- depth and loops --------------------------------------------------------------------------


def test_a_delegation_cycle_back_to_the_same_agent_and_input_ends_as_loop_detected(
    dispatcher: Dispatcher, redis_url: str
) -> None:
    request = {"text": "Summarize the incident report"}
    first = AgentMessage.root(recipient="summarizer", payload=request)
    assert send(dispatcher, first).message_type is MessageType.RESULT
    onward = first.child(sender="summarizer", recipient="critic", payload=request)
    back = onward.child(sender="critic", recipient="summarizer", payload=request)

    reply = send(dispatcher, back)

    assert reply.message_type is MessageType.ERROR
    assert reply.payload["code"] == "loop_detected"
    assert reply.payload["detail"] == {"first_message_id": first.message_id}
    steps = dispatcher.handle(first.task_id).trace()
    assert steps[-1].attempts == 0  # refused before any model call
    dead = redis.Redis.from_url(redis_url).xrevrange(keys.DEAD_LETTERS, count=5)
    assert any(e[b"code"] == b"loop_detected" for _, e in dead)
    # The evaluator's bounded revision rounds stay allowed: each round carries the critique
    # (tests/test_patterns.py::test_evaluator_optimizer_revises_until_the_critic_passes).


# -- budgets ----------------------------------------------------------------------------------


def test_a_budget_too_small_for_one_call_makes_no_call_and_ends_budget_exceeded(
    dispatcher: Dispatcher, ledger: Callable[[str], dict[str, Any]]
) -> None:
    handle = dispatcher.submit("Summarize the budget", pattern="pipeline", budget_tokens=200)
    outcome = handle.wait(60)

    assert outcome.status == "budget_exceeded"
    assert outcome.message.payload["code"] == "budget_exceeded"
    assert "not made" in outcome.message.payload["message"]
    assert outcome.cost_micro_usd == 0
    assert ledger(handle.task_id)["calls"] == []


def test_a_finished_task_holds_nothing_back_and_its_budget_counts_what_was_billed(
    dispatcher: Dispatcher,
    redis_url: str,
    script_model: Callable[[str, list[dict[str, Any]]], None],
    ledger: Callable[[str], dict[str, Any]],
) -> None:
    """Holds are settled in the same round trips as the step's begin and record, and a second
    (stricter) call settles the first; at the end only real spending is left on the budget."""
    text = f"Summarize the settlement drill {uuid.uuid4().hex[:8]}"
    script_model(text, [{"text": "Sure, here is a summary in prose."}])  # forces a second call
    handle = dispatcher.submit(text, pattern="pipeline")
    outcome = handle.wait(60)

    assert outcome.status == "done"
    assert max(step.attempts for step in handle.trace()) == 2
    budget = redis.Redis.from_url(redis_url).hgetall(keys.budget(handle.task_id))
    assert not [field for field in budget if field.startswith(b"r:")]  # no hold left open
    assert (
        int(budget[b"micro_usd"])
        == outcome.cost_micro_usd
        == billed_micro_usd(ledger(handle.task_id))
    )
    used = outcome.input_tokens + outcome.output_tokens
    cached = outcome.cache_creation_input_tokens + outcome.cache_read_input_tokens
    assert int(budget[b"tokens"]) == used + cached


@pytest.fixture
def more_analysts(stack_env: dict[str, str], log_dir: Path) -> Iterator[list[ManagedProcess]]:
    extra = [start_worker(["analyst"], stack_env, log_dir, concurrency=8) for _ in range(2)]
    yield extra
    stop_all(extra)


def test_fifty_concurrent_tasks_never_spend_past_their_budget(
    dispatcher: Dispatcher,
    more_analysts: list[ManagedProcess],
    ledger: Callable[[str], dict[str, Any]],
) -> None:
    """Three analyst processes race on each task's budget; the reservation holds the line."""
    budget_usd = 0.03  # room for about two worst-case analyst calls out of four
    handles = [
        dispatcher.submit(
            f"Approve change {n} of the budget drill?",
            pattern="consensus",
            review_below=0,
            budget_usd=budget_usd,
        )
        for n in range(50)
    ]
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda h: h.wait(120), handles))

    statuses = {o.status for o in outcomes}
    assert statuses <= {"done", "needs_review", "failed", "budget_exceeded"}
    assert "budget_exceeded" in statuses
    for handle, outcome in zip(handles, outcomes, strict=True):
        billed = billed_micro_usd(ledger(handle.task_id))
        assert outcome.cost_micro_usd == billed <= budget_usd * 1_000_000
        if outcome.status == "budget_exceeded":
            assert outcome.message.payload["code"] == "budget_exceeded"
            skipped_or_refused = [s for s in handle.trace() if s.status != "ok"]
            assert skipped_or_refused


# -- retry cap and rate limits, on a fleet of their own ---------------------------------------


def sim_health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


class Fleet:
    def __init__(
        self, dispatcher: Dispatcher, simulator_url: str, workers: list[ManagedProcess]
    ) -> None:
        self.dispatcher = dispatcher
        self.simulator_url = simulator_url
        self.workers = workers

    def worker_log(self) -> str:
        return "\n".join(w.log_path.read_text(errors="replace") for w in self.workers)


def _seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


@pytest.fixture
def make_fleet(stack_env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., Fleet]]:
    """A simulator with its own limits and summarizer workers on a Redis database of their own."""
    started: list[ManagedProcess] = []

    def make(db: int, sim_args: list[str], env: dict[str, str], processes: int = 2) -> Fleet:
        simulator, url = start_simulator(log_dir, extra_args=sim_args)
        started.append(simulator)
        fleet_env = {**with_db(stack_env, db), "ANTHROPIC_BASE_URL": url, **env}
        redis.Redis.from_url(fleet_env["CHORUS_REDIS_URL"]).flushdb()
        workers = [
            start_worker(["summarizer"], fleet_env, log_dir, concurrency=16)
            for _ in range(processes)
        ]
        started.extend(workers)
        dispatcher = Dispatcher(create_app(Settings.from_env(fleet_env)))

        def consumers() -> int:
            replies = dispatcher.app.control.ping(timeout=0.5) or []
            return sum(name.startswith("summarizer.") for reply in replies for name in reply)

        wait_until(lambda: consumers() >= processes, timeout=120, what="fleet workers")
        return Fleet(dispatcher, url, workers)

    yield make
    stop_all(started)


def test_the_retry_cap_stops_a_task_wide_retry_storm(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(
        3,
        ["--overloaded", "1.0"],
        {"CHORUS_TASK_MAX_RETRIES": "2", "CHORUS_RETRY_BASE_DELAY": "0.01"},
    )
    handle = fleet.dispatcher.submit(
        "Summarize the storm", pattern="pipeline", steps=["summarizer", "summarizer"]
    )
    outcome = handle.wait(60)

    assert outcome.status == "failed"
    assert outcome.message.payload["code"] == "retry_limit"
    assert outcome.retries <= 2
    assert sum(s.retries for s in handle.trace()) <= 2


def test_the_shared_limiter_keeps_a_multi_process_fleet_under_the_providers_limit(
    make_fleet: Callable[..., Fleet],
) -> None:
    rpm = 60  # the provider's: a full bucket of 60, then one request a second
    # Configured 10 % under the provider's limit, as one would in production: the two buckets
    # start at different moments and their clocks differ by scheduling jitter. Four processes
    # limiting on their own would still send about four times the limit.
    ours = rpm * 9 // 10
    fleet = make_fleet(4, ["--rpm", str(rpm)], {"CHORUS_RATE_LIMIT_RPM": str(ours)})
    handles = [
        fleet.dispatcher.submit(f"Summarize note {n}", pattern="pipeline", steps=["summarizer"])
        for n in range(rpm + 8)
    ]
    outcomes = [h.wait(90) for h in handles]

    assert {o.status for o in outcomes} == {"done"}
    assert sim_health(fleet.simulator_url)["rate_limited"] == 0
    assert sum(o.retries for o in outcomes) == 0


# -- dead letters -----------------------------------------------------------------------------


def test_a_dead_letter_can_be_listed_shown_and_retried_to_completion(
    dispatcher: Dispatcher,
    stack_env: dict[str, str],
    script_model: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    text = "Summarize the flaky dependency report"
    script_model(text, [{"text": "not json"}, {"text": "still not json"}])
    handle = dispatcher.submit(text, pattern="pipeline", steps=["summarizer"])
    failed = handle.wait(60)
    assert failed.message.payload["code"] == "invalid_output"

    listed = chorus(["dlq", "list", "--json", "--code", "invalid_output"], stack_env)
    assert listed.returncode == 0, listed.stderr
    letter = next(
        json.loads(line)
        for line in listed.stdout.splitlines()
        if json.loads(line)["task_id"] == handle.task_id
    )
    assert letter["retryable"] is True
    assert letter["message"]["recipient"] == "summarizer"
    assert letter["message"]["payload"]["text"] == text
    shown = json.loads(chorus(["dlq", "show", letter["id"]], stack_env).stdout)
    assert shown["error"] == letter["error"]

    retried = chorus(["dlq", "retry", letter["id"]], stack_env)  # the script is used up now
    assert retried.returncode == 0, retried.stderr
    wait_until(lambda: handle.status().get("status") == "done", timeout=60, what="the retried step")
    final = handle.wait(5)
    assert final.status == "done"
    (retry,) = [m for m in handle.messages() if m.retry_count == 1]
    assert final.message.parent_message_id == retry.message_id
    original = next(m for m in handle.messages() if m.message_id == letter["message"]["message_id"])
    assert (retry.parent_message_id, retry.depth) == (original.parent_message_id, original.depth)
    assert [s.status for s in handle.trace()] == ["error", "ok"]

    again = chorus(["dlq", "retry", letter["id"]], stack_env)
    assert again.returncode == 2
    assert "already retried" in again.stderr


def test_a_long_fleet_wide_pause_defers_the_task_instead_of_holding_a_slot(
    dispatcher: Dispatcher, worker_logs: Callable[[], str]
) -> None:
    """On the session's fleet: nothing else runs on it meanwhile, and the pause ends by itself."""
    runtime = dispatcher.app.runtime()
    model = runtime.settings.model_for(AGENTS["summarizer"].tier)
    deferrals_before = worker_logs().count("Retry in")
    runtime.limiter.pause(model, 7.0)  # what a 429 with retry-after: 7 does to the whole fleet

    handle = dispatcher.submit(
        "Summarize after the pause", pattern="pipeline", steps=["summarizer"]
    )
    outcome = handle.wait(30)

    assert outcome.status == "done"
    started = handle.trace()[0].started_at
    assert started > handle.status()["submitted_at"]
    waited = _seconds_between(handle.status()["submitted_at"], started)
    assert waited >= 5.0  # it waited out the pause off the worker's slots, then ran
    assert worker_logs().count("Retry in") > deferrals_before
    # Each deferral took one retry of the task's cap, so a pause cannot defer it for ever.
    taken = runtime.redis.hget(keys.budget(handle.task_id), "retries")
    assert taken is not None
    assert int(taken) >= 1
