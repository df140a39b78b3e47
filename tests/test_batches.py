"""Batched workflows end to end, through real workers, Redis and the simulator's Message Batches:
the same answers as synchronous runs at half the price from the provider's ledger, budgets
held at the batch price, the stricter retry as a second batched request, batched calls in the
trace, and errored or expired requests as error results with dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anthropic
import pytest

from dispatcher.deadletters import DeadLetters
from dispatcher.embedded import wait_until
from dispatcher.trace import render, trace_document
from messages import ErrorCode
from tests.batch_fleet import BatchFleet, batch_fleet, billed_micro_usd
from workers import keys
from workers.batch_results import deliver
from workers.batcher import Batcher
from workers.budget import TaskBudget
from workers.models import DEFAULT_PRICES, Usage, cost_micro_usd
from workers.settings import Settings

QUESTION = "Should a small team adopt event sourcing for its billing system"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchFleet]:
    with batch_fleet(tmp_path_factory.mktemp("batch-logs")) as running:
        yield running


@pytest.fixture(autouse=True)
def reset_simulator(fleet: BatchFleet) -> Iterator[None]:
    yield
    fleet.control("/_sim/batches", "DELETE")
    fleet.control("/_sim/scripts", "DELETE")


@pytest.mark.parametrize("workflow", ["pipeline", "consensus"])
def test_a_batched_workflow_answers_like_a_synchronous_one_at_half_the_ledger_price(
    fleet: BatchFleet, workflow: str
) -> None:
    dispatcher = fleet.dispatcher()
    batched = dispatcher.submit(QUESTION, workflow=workflow, batch=True)
    direct = dispatcher.submit(QUESTION, workflow=workflow)
    out_b, out_s = batched.wait(120), direct.wait(120)

    assert out_b.status == out_s.status
    assert out_b.message.message_type == out_s.message.message_type
    assert set(out_b.message.payload) == set(out_s.message.payload)
    report_b, report_s = fleet.ledger(batched.task_id), fleet.ledger(direct.task_id)
    assert out_b.cost_micro_usd == billed_micro_usd(report_b)
    assert out_s.cost_micro_usd == billed_micro_usd(report_s)
    assert all(call["batch"] for call in report_b["calls"])
    assert not any(call["batch"] for call in report_s["calls"])
    assert out_b.cost_micro_usd / out_s.cost_micro_usd == pytest.approx(0.5, abs=0.01)

    steps = batched.trace()
    assert steps
    assert all(step.batched_calls for step in steps)
    ledger_ids = {call["custom_id"] for call in report_b["calls"]}
    marked = {call["custom_id"] for step in steps for call in step.batched_calls}
    assert marked == ledger_ids
    assert not any(step.batched_calls for step in direct.trace())
    shown = "\n".join(render(trace_document(batched)))
    assert shown.count(", batched]") == len(steps)
    assert "batched call 1: msgbatch_" in shown


def test_a_parked_step_holds_its_budget_at_the_batch_price_and_no_worker_slot(
    fleet: BatchFleet,
) -> None:
    fleet.control("/_sim/batches", "POST", {"delay": 3.0})
    dispatcher = fleet.dispatcher()
    handle = dispatcher.submit(f"{QUESTION} (held)", agent="research", batch=True)
    client = fleet.client()

    def parked() -> bool:
        return client.hget(keys.task(handle.task_id), "parked") == b"1"

    wait_until(parked, timeout=30, what="the step to park")
    task = cast(dict[bytes, bytes], client.hgetall(keys.task(handle.task_id)))
    assert task.get(b"running:research", b"0") == b"0"  # the slot is free while it waits
    budget = cast(dict[bytes, bytes], client.hgetall(keys.budget(handle.task_id)))
    holds = {k: v for k, v in budget.items() if k.startswith(b"r:")}
    assert len(holds) == 1
    tokens, usd = (int(x) for x in next(iter(holds.values())).split(b":"))
    spec = dispatcher.app.team.agent("research")
    price = DEFAULT_PRICES[spec.model_in(dispatcher.app.settings)]
    spec_max = spec.max_tokens
    hold = TaskBudget(client, default_tokens=0, default_micro_usd=0, ttl=60).hold(
        handle.task_id, "x", prompt_tokens=tokens - spec_max, max_tokens=spec_max, price=price
    )
    assert usd == pytest.approx(hold.micro_usd / 2, abs=1)  # the batch price: half

    outcome = handle.wait(60)
    assert outcome.status == "done"
    after = cast(dict[bytes, bytes], client.hgetall(keys.budget(handle.task_id)))
    assert not [k for k in after if k.startswith(b"r:")]
    assert (
        int(after[b"micro_usd"])
        == outcome.cost_micro_usd
        == billed_micro_usd(fleet.ledger(handle.task_id))
    )


def test_an_invalid_batched_answer_is_retried_stricter_as_a_second_batched_request(
    fleet: BatchFleet,
) -> None:
    marker = "STRICTER-BATCH-5c1"
    fleet.control("/_sim/scripts", "POST", {"match": marker, "responses": [{"text": "no"}]})
    handle = fleet.dispatcher().submit(f"{QUESTION} {marker}", agent="research", batch=True)
    outcome = handle.wait(60)

    assert outcome.status == "done"
    (step,) = handle.trace()
    assert step.attempts == 2
    assert [c["attempt"] for c in step.batched_calls] == [1, 2]
    report = fleet.ledger(handle.task_id)
    assert [c["batch"] for c in report["calls"]] == [True, True]
    assert len({c["batch_id"] for c in report["calls"]}) == 2  # the retry went in a new batch
    assert outcome.cost_micro_usd == billed_micro_usd(report)
    budget = cast(dict[bytes, bytes], fleet.client().hgetall(keys.budget(handle.task_id)))
    assert int(budget[b"micro_usd"]) == outcome.cost_micro_usd  # each attempt settled once


@pytest.mark.parametrize(
    ("plan", "code"),
    [
        ({"errored": [{"match": "BATCH-ERR-77", "type": "overloaded_error"}]}, "batch_errored"),
        ({"expired": ["BATCH-EXP-77"]}, "batch_expired"),
    ],
)
def test_errored_and_expired_requests_end_as_error_results_with_dead_letters(
    fleet: BatchFleet, plan: dict[str, Any], code: str
) -> None:
    fleet.control("/_sim/batches", "POST", plan)
    marker = next(iter(plan.values()))[0]
    marker = marker["match"] if isinstance(marker, dict) else marker
    dispatcher = fleet.dispatcher()
    handle = dispatcher.submit(f"{QUESTION} {marker}", agent="research", batch=True)
    outcome = handle.wait(60)

    assert outcome.status == "failed"
    assert outcome.message.payload["code"] == code == ErrorCode(code)
    assert "msgbatch_" in outcome.message.payload["message"]
    letters = [
        letter
        for letter in DeadLetters(dispatcher).list(limit=200)
        if letter.task_id == handle.task_id
    ]
    assert [letter.code for letter in letters] == [code]
    assert outcome.cost_micro_usd == 0 == billed_micro_usd(fleet.ledger(handle.task_id))
    budget = cast(dict[bytes, bytes], fleet.client().hgetall(keys.budget(handle.task_id)))
    assert not [k for k in budget if k.startswith(b"r:")]  # the hold was released


def test_a_new_leader_adopts_a_batch_its_predecessor_created_but_did_not_record(
    fleet: BatchFleet, tmp_path: Path
) -> None:
    """The crash window between creating a batch and recording its id: the next leader finds
    the batch by its custom_ids and never sends the requests again. Runs on a Redis database
    of its own (no worker's batcher leads there)."""
    url = fleet.env["CHORUS_REDIS_URL"].rsplit("/", 1)[0] + "/5"
    settings = Settings.from_env({**fleet.env, "CHORUS_REDIS_URL": url})
    app = fleet.dispatcher().app.using(settings)
    client = app.runtime().redis
    client.flushdb()
    sdk = anthropic.Anthropic(base_url=fleet.sim_url, api_key="test", max_retries=0)
    model = "claude-haiku-5-5"
    params: dict[str, Any] = {"model": model, "max_tokens": 200}
    ids = [f"adopt_{tmp_path.name[-12:]}_{i}" for i in range(3)]
    for number, cid in enumerate(ids):
        entry = {
            "custom_id": cid,
            "task_id": "t-adopt",
            "message_id": f"m-{number}",
            "attempt": 1,
            "model": params["model"],
            "params": {**params, "messages": [{"role": "user", "content": f"Question {number}"}]},
        }
        client.hset(keys.BATCH_REQUESTS, cid, json.dumps(entry))
        client.zadd(keys.batch_pending(model), {cid: number})
        client.sadd(keys.BATCH_MODELS, model)

    first = Batcher(client, sdk, app, settings)
    assert first.lead() == 2
    record = first.claim(model, now=0.0)
    assert record is not None
    assert record.state == "creating"
    requests = [json.loads(client.hget(keys.BATCH_REQUESTS, cid) or b"") for cid in ids]
    made = sdk.messages.batches.create(
        requests=cast(Any, [{"custom_id": r["custom_id"], "params": r["params"]} for r in requests])
    )  # ... and the leader dies before recording made.id
    client.delete(keys.BATCH_LOCK)

    second = Batcher(client, sdk, app, settings)
    later = settings.batch_lock_seconds + 1.0

    def adopted() -> bool:
        second.run_once(now=later)
        return not client.hlen(keys.BATCHES)

    wait_until(adopted, timeout=30, what="the orphan batch to be adopted and delivered")
    billed = [c for c in fleet.ledger()["calls"] if c["custom_id"] in ids]
    assert sorted(c["custom_id"] for c in billed) == sorted(ids)  # each request sent once
    assert {c["batch_id"] for c in billed} == {made.id}
    for number in range(3):
        stored = client.hget(keys.batch_step("t-adopt", f"m-{number}"), "res:1")
        assert stored is not None
        assert json.loads(stored)["type"] == "succeeded"
    assert not client.hlen(keys.BATCH_REQUESTS)
    assert deliver(client, [], 60) == 0
    client.flushdb()


def test_a_claimed_batch_never_created_is_created_once_by_the_next_leader(
    fleet: BatchFleet, tmp_path: Path
) -> None:
    url = fleet.env["CHORUS_REDIS_URL"].rsplit("/", 1)[0] + "/6"
    settings = Settings.from_env({**fleet.env, "CHORUS_REDIS_URL": url})
    app = fleet.dispatcher().app.using(settings)
    client = app.runtime().redis
    client.flushdb()
    sdk = anthropic.Anthropic(base_url=fleet.sim_url, api_key="test", max_retries=0)
    model = "claude-haiku-5-5"
    cid = f"never_{tmp_path.name[-12:]}"
    entry = {
        "custom_id": cid,
        "task_id": "t-never",
        "message_id": "m-0",
        "attempt": 1,
        "model": model,
        "params": {
            "model": model,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    }
    client.hset(keys.BATCH_REQUESTS, cid, json.dumps(entry))
    client.zadd(keys.batch_pending(model), {cid: 0})
    client.sadd(keys.BATCH_MODELS, model)
    first = Batcher(client, sdk, app, settings)
    first.lead()
    assert first.claim(model, now=0.0) is not None  # ... and dies before creating it
    client.delete(keys.BATCH_LOCK)

    second = Batcher(client, sdk, app, settings)
    later = settings.batch_lock_seconds + 1.0

    def delivered() -> bool:
        second.run_once(now=later)
        return client.hexists(keys.batch_step("t-never", "m-0"), "res:1")

    wait_until(delivered, timeout=30, what="the claimed request to be sent and answered")
    billed = [c for c in fleet.ledger()["calls"] if c["custom_id"] == cid]
    assert len(billed) == 1
    client.flushdb()


def test_the_batch_price_is_half_of_every_rate() -> None:
    for price in DEFAULT_PRICES.values():
        half = price.batch()
        usage = Usage(1000, 500, 300, 200)
        assert cost_micro_usd(usage, half) == pytest.approx(cost_micro_usd(usage, price) / 2, abs=1)
