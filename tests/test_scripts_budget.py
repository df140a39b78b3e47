"""The budget scripts on their own (reserve.lua, settle.lua, and the holds that ride in
begin_step and record_step), against a real Redis and no workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from messages.errors import ChorusError
from messages.status import StepStatus
from tests.private_redis import private_redis
from workers import keys
from workers.budget import BudgetExceededError, Hold, Reservation, TaskBudget
from workers.claude import Reply
from workers.journal import Journal
from workers.models import Price, Usage
from workers.state import StepRecord, TaskState

TASK = "t-budget"
PRICE = Price(input=1_000_000, output=2_000_000, cache_write_5m=1_250_000, cache_write_1h=0,
              cache_read=100_000)  # fmt: skip
"""$1 / $2 per million tokens: one token of input costs one micro-dollar."""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


@pytest.fixture
def budget(client: redis.Redis) -> TaskBudget:
    client.flushdb()
    TaskState(client, ttl=60).submit(
        TASK, pattern="pipeline", root_message={}, budget_tokens=1_000, budget_micro_usd=2_000
    )
    return TaskBudget(client, default_tokens=10, default_micro_usd=10, ttl=60)


def spent(client: redis.Redis) -> dict[str, int]:
    """The budget's totals and open holds (not the names of settlements already applied)."""
    raw = client.hgetall(keys.budget(TASK))
    return {k.decode(): int(v.split(b":")[0]) for k, v in raw.items() if not k.startswith(b"s:")}


def hold(budget: TaskBudget, field: str, tokens: int = 100) -> Hold:
    return budget.hold(TASK, field, prompt_tokens=tokens - 50, max_tokens=50, price=PRICE)


def test_a_hold_is_the_worst_case_and_a_settlement_replaces_it_by_the_real_cost(
    budget: TaskBudget, client: redis.Redis
) -> None:
    worst = hold(budget, "m:1")
    assert (worst.tokens, worst.micro_usd) == (100, 163)  # 50 cache-written + 50 output
    reservation = budget.reserve(worst)
    assert spent(client) == {"r:m:1": 100, "tokens": 100, "micro_usd": 163}

    usage = Usage(input_tokens=30, output_tokens=10)
    budget.settle(budget.settlement(reservation, usage))
    assert spent(client) == {"tokens": 40, "micro_usd": 50}


def test_a_failed_call_releases_its_hold(budget: TaskBudget, client: redis.Redis) -> None:
    budget.settle(budget.settlement(budget.reserve(hold(budget, "m:1")), None))
    assert spent(client) == {"tokens": 0, "micro_usd": 0}


def test_a_call_that_does_not_fit_is_refused_and_holds_nothing(
    budget: TaskBudget, client: redis.Redis
) -> None:
    budget.reserve(hold(budget, "m:1", tokens=900))
    with pytest.raises(BudgetExceededError) as refused:
        budget.reserve(hold(budget, "m:2", tokens=200))
    assert (refused.value.used, refused.value.want, refused.value.limit) == (900, 200, 1_000)
    assert isinstance(refused.value, ChorusError)
    assert "r:m:2" not in spent(client)


def test_a_redelivery_re_running_a_call_replaces_the_hold_of_the_run_that_died(
    budget: TaskBudget, client: redis.Redis
) -> None:
    budget.reserve(hold(budget, "m:1", tokens=600))  # the worker died during this call
    budget.reserve(hold(budget, "m:1", tokens=600))  # its redelivery: fits, held once
    assert spent(client)["tokens"] == 600


def test_the_next_hold_settles_the_previous_call_in_the_same_round_trip(
    budget: TaskBudget, client: redis.Redis
) -> None:
    first = budget.reserve(hold(budget, "m:1"))
    settlement = budget.settlement(first, Usage(input_tokens=20, output_tokens=5))
    budget.reserve(hold(budget, "m:2"), settle_first=settlement)
    assert spent(client) == {"r:m:2": 100, "tokens": 125, "micro_usd": 193}


def test_a_task_without_limits_of_its_own_gets_the_defaults(
    budget: TaskBudget, client: redis.Redis
) -> None:
    client.hdel(keys.task(TASK), "budget_tokens", "budget_micro_usd")
    with pytest.raises(BudgetExceededError) as refused:
        budget.reserve(hold(budget, "m:1"))
    assert refused.value.limit == 10


def test_the_first_hold_rides_in_begin_and_the_last_settlement_in_record(
    budget: TaskBudget, client: redis.Redis
) -> None:
    state = TaskState(client, ttl=60)
    worst = hold(budget, "in-1:1")
    assert (
        state.begin_step(TASK, "in-1", "analyst", hold=budget.reserve_args(worst)).refused is None
    )
    assert spent(client)["r:in-1:1"] == 100

    usage = Usage(input_tokens=30, output_tokens=10)
    settlement = budget.settlement(Reservation(worst.task_id, worst.field, worst.price), usage)
    state.record_step(step("in-1", 50), final_status=None, settle=settlement)
    assert spent(client) == {"tokens": 40, "micro_usd": 50}


def test_a_settlement_sent_again_after_its_reply_was_lost_is_not_spent_twice(
    budget: TaskBudget, client: redis.Redis
) -> None:
    state = TaskState(client, ttl=60)
    worst = hold(budget, "in-1:1")
    state.begin_step(TASK, "in-1", "analyst", hold=budget.reserve_args(worst))
    usage = Usage(input_tokens=30, output_tokens=10)
    settlement = budget.settlement(Reservation(worst.task_id, worst.field, worst.price), usage)
    recorded = step("in-1", 50)
    for _ in range(2):  # the second: the client's retry of a call whose reply a restart lost
        state.record_step(recorded, final_status=None, settle=settlement)
    assert spent(client) == {"tokens": 40, "micro_usd": 50}


def test_a_settle_or_reserve_sent_again_after_its_reply_was_lost_settles_once(
    budget: TaskBudget, client: redis.Redis
) -> None:
    """settle.lua on its own, and the settlement reserve.lua applies before its hold: the
    client's retry of either, after a restart lost the reply, spends the call once."""
    first = budget.reserve(hold(budget, "in-1:1"))
    settlement = budget.settlement(first, Usage(input_tokens=30, output_tokens=10))
    for _ in range(2):
        budget.settle(settlement)
    assert spent(client) == {"tokens": 40, "micro_usd": 50}

    second = budget.reserve(hold(budget, "in-1:2"))
    settled_first = budget.settlement(second, Usage(input_tokens=20))
    for _ in range(2):
        budget.reserve(hold(budget, "in-1:3"), settle_first=settled_first)
    assert spent(client) == {"r:in-1:3": 100, "tokens": 40 + 20 + 100, "micro_usd": 50 + 20 + 163}


def test_a_tool_loop_turn_journaled_again_after_its_reply_was_lost_is_not_spent_twice(
    budget: TaskBudget, client: redis.Redis
) -> None:
    journal = Journal(client, TASK, "in-1", ttl=60)
    reservation = budget.reserve(hold(budget, "in-1:2"))
    usage = Usage(input_tokens=30, output_tokens=10)
    reply = Reply("m", '{"a": 1}', {"a": 1}, "end_turn", usage, 12.5, "req-1")
    settlement = budget.settlement(reservation, usage)
    for _ in range(2):  # the second: the client's retry of a call whose reply a restart lost
        assert journal.save_turn(2, reply, settlement) == reply
    assert spent(client) == {"tokens": 40, "micro_usd": 50}


def test_begin_refuses_a_first_call_that_does_not_fit(
    budget: TaskBudget, client: redis.Redis
) -> None:
    state = TaskState(client, ttl=60)
    worst = hold(budget, "in-1:1", tokens=2_000)
    begin = state.begin_step(TASK, "in-1", "analyst", hold=budget.reserve_args(worst))
    assert begin.refused is not None
    assert [part.decode() if isinstance(part, bytes) else part for part in begin.refused] == [
        "tokens",
        0,
        2_000,
        1_000,
    ]
    assert spent(client) == {}


@pytest.mark.parametrize("loser_settles_first", [False, True])
def test_two_racing_deliveries_leave_the_budget_at_what_both_cost(
    budget: TaskBudget, client: redis.Redis, loser_settles_first: bool
) -> None:
    """Both deliveries hold the same call (the second replaces the first's hold) and both
    settle: in either order the budget ends at what the provider billed for the two, which is
    also the task's cost (the duplicate's record adds its cost)."""
    state = TaskState(client, ttl=60)
    worst = hold(budget, "in-1:1")
    for _ in range(2):
        state.begin_step(TASK, "in-1", "analyst", hold=budget.reserve_args(worst))
    reservation = Reservation(worst.task_id, worst.field, worst.price)
    winner = (step("in-1", 50), budget.settlement(reservation, Usage(input_tokens=50)))
    loser = (step("in-1", 70), budget.settlement(reservation, Usage(input_tokens=70)))
    for record, settlement in [loser, winner] if loser_settles_first else [winner, loser]:
        state.record_step(record, final_status=None, settle=settlement)

    assert spent(client) == {"tokens": 120, "micro_usd": 120}
    assert state.task_info(TASK)["cost_micro_usd"] == "120"


def test_a_second_call_overlapping_a_racing_delivery_stays_counted(
    budget: TaskBudget, client: redis.Redis
) -> None:
    """The first delivery settles its first call (with its second call's hold) before the
    racing delivery holds that same first call: what the first call cost stays spent."""
    first = budget.settlement(
        budget.reserve(hold(budget, "in-1:1")), Usage(input_tokens=30, output_tokens=0)
    )
    budget.reserve(hold(budget, "in-1:2"), settle_first=first)
    racing = budget.reserve(hold(budget, "in-1:1"))
    budget.settle(budget.settlement(racing, Usage(input_tokens=40)))
    assert spent(client)["micro_usd"] == 30 + 40 + 163  # two paid calls, one hold open


def test_the_retry_cap_counts_across_the_task(budget: TaskBudget) -> None:
    assert [budget.take_retry(TASK, 2) for _ in range(3)] == [True, True, False]


def step(message_id: str, cost: int) -> StepRecord:
    return StepRecord(
        task_id=TASK,
        input_message_id=message_id,
        agent="analyst",
        status=StepStatus.OK,
        message={"message_id": f"out-of-{message_id}"},
        cost_micro_usd=cost,
    )
