"""The simulator's Message Batches API, driven through the SDK's `client.messages.batches`."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anthropic
import pytest

from simulator import BackgroundSimulator, SimulatorConfig

MODEL = "claude-haiku-5-5"
LOOKUP = {
    "name": "lookup",
    "description": "Look a term up in the glossary.",
    "input_schema": {"type": "object", "properties": {"term": {"type": "string"}}},
}
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"enum": ["approve", "reject"]}},
    "required": ["verdict"],
}


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator(SimulatorConfig(batch_delay=0.05)) as running:
        yield running


@pytest.fixture(scope="module")
def client(sim: BackgroundSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=0)


def control(sim: BackgroundSimulator, path: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{sim.url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture(autouse=True)
def reset_plans(sim: BackgroundSimulator) -> Iterator[None]:
    yield
    control(sim, "/_sim/batches", "DELETE")
    control(sim, "/_sim/faults", "POST", {"rates": {}, "schedule": []})


def params(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 5.0) -> Any:
    """Poll until the batch has ended (no sleeping: each poll is a round trip)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
    raise AssertionError(f"batch {batch_id} still {batch.processing_status} after {timeout}s")


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result for line in client.messages.batches.results(batch_id)}


def test_a_batch_is_in_progress_then_ends_with_results_at_its_url_then_can_be_deleted(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    first_turn = params("Define the term idempotency", tools=[LOOKUP])
    created = client.messages.batches.create(
        requests=[
            {"custom_id": "plain", "params": params("Summarize message brokers")},
            {
                "custom_id": "json",
                "params": params(
                    "Approve the plan",
                    output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
                ),
            },
            {"custom_id": "tool-turn-1", "params": first_turn},
        ]
    )
    assert created.type == "message_batch"
    assert created.id.startswith("msgbatch_")
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert created.results_url is None
    assert created.ended_at is None
    assert created.expires_at - created.created_at == timedelta(hours=24)
    with pytest.raises(anthropic.AnthropicError, match="finished processing"):
        client.messages.batches.results(created.id)

    batch = ended(client, created.id)
    assert batch.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 3,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.ended_at is not None
    assert batch.ended_at >= batch.created_at
    assert batch.results_url == f"{sim.url}/v1/messages/batches/{batch.id}/results"
    answers = results(client, batch.id)
    assert set(answers) == {"plain", "json", "tool-turn-1"}
    assert all(r.type == "succeeded" for r in answers.values())
    assert answers["plain"].message.content[0].text.startswith("[simulated]")
    assert json.loads(answers["json"].message.content[0].text) in (
        {"verdict": "approve"},
        {"verdict": "reject"},
    )
    tool_turn = answers["tool-turn-1"].message
    assert tool_turn.stop_reason == "tool_use"
    assert tool_turn.usage.service_tier == "batch"

    # The next turn of that tool loop, batched too: one request is one turn.
    call = next(b for b in tool_turn.content if b.type == "tool_use")
    second_turn = {
        **first_turn,
        "messages": [
            *first_turn["messages"],
            {"role": "assistant", "content": [b.model_dump() for b in tool_turn.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "x"}],
            },
        ],
    }
    follow_up = client.messages.batches.create(
        requests=[{"custom_id": "tool-turn-2", "params": second_turn}]
    )
    final = results(client, ended(client, follow_up.id).id)["tool-turn-2"]
    assert final.message.stop_reason == "end_turn"

    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_list_pages_newest_first_with_after_id_and_before_id(client: anthropic.Anthropic) -> None:
    made = [
        client.messages.batches.create(
            requests=[{"custom_id": f"r{i}", "params": params(f"Request {i}")}]
        ).id
        for i in range(5)
    ]
    newest_first = made[::-1]

    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])
    listed = [b.id for b in client.messages.batches.list(limit=2) if b.id in made]
    assert listed == newest_first  # the SDK follows after_id through every page
    before = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3]
    assert before.has_more is True
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.list(limit=0)
    for batch_id in made:
        ended(client, batch_id)


def test_cancel_makes_a_batch_canceling_then_ended_with_its_requests_canceled(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    control(sim, "/_sim/batches", "POST", {"delay": 60})
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"c{i}", "params": params("Wait for me")} for i in range(2)]
    )
    with pytest.raises(anthropic.BadRequestError, match="cancel it"):
        client.messages.batches.delete(batch.id)  # only an ended batch can be deleted

    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    done = ended(client, batch.id)
    assert done.request_counts.canceled == 2
    assert {r.type for r in results(client, batch.id).values()} == {"canceled"}
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)
    client.messages.batches.delete(batch.id)


def test_requests_error_or_expire_as_scripted_by_custom_id_or_marker_or_invalid_params(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    overloaded = {"match": "MARK-5e1", "type": "overloaded_error", "message": "Overloaded"}
    control(sim, "/_sim/batches", "POST", {"errored": ["e-1", overloaded], "expired": ["x-1"]})
    orphan = params("go on")
    orphan["messages"] = [
        {"role": "user", "content": "Look it up"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}],
        },
        {"role": "user", "content": "no result given"},
    ]
    no_max_tokens = params("Hello")
    del no_max_tokens["max_tokens"]
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "ok-1", "params": params("Fine")},
            {"custom_id": "e-1", "params": params("Fine too")},
            {"custom_id": "x-1", "params": params("Too late")},
            {"custom_id": "m-1", "params": params("Contains MARK-5e1 inside")},
            {"custom_id": "bad-1", "params": no_max_tokens},
            {"custom_id": "bad-2", "params": orphan},
        ]
    )
    counts = ended(client, batch.id).request_counts
    assert (counts.succeeded, counts.errored, counts.expired) == (1, 4, 1)
    out = results(client, batch.id)
    assert out["ok-1"].type == "succeeded"
    assert out["x-1"].type == "expired"
    assert out["e-1"].error.error.type == "api_error"
    assert out["e-1"].error.type == "error"
    assert (out["m-1"].error.error.type, out["m-1"].error.error.message) == (
        "overloaded_error",
        "Overloaded",
    )
    assert out["bad-1"].error.error.type == "invalid_request_error"
    assert out["bad-1"].error.error.message == "max_tokens: Field required"
    assert "without `tool_result` blocks" in out["bad-2"].error.error.message


def test_error_and_expiry_rates_apply_to_every_request(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    control(sim, "/_sim/batches", "POST", {"expire_rate": 1.0})
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"r-{i}", "params": params("Anything")} for i in range(4)]
    )
    assert ended(client, batch.id).request_counts.expired == 4
    control(sim, "/_sim/batches", "POST", {"expire_rate": 0.0, "error_rate": 1.0})
    batch = client.messages.batches.create(
        requests=[{"custom_id": "r", "params": params("Anything")}]
    )
    assert ended(client, batch.id).request_counts.errored == 1


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "at least 1 item"),
        ([{"custom_id": "has space", "params": {}}], "String should match pattern"),
        ([{"custom_id": "x" * 65, "params": {}}], "String should match pattern"),
        ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "duplicate"),
        ([{"custom_id": "a", "params": "not an object"}], "valid dictionary"),
    ],
)
def test_a_malformed_batch_is_refused_with_400(
    client: anthropic.Anthropic, requests: list[Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.batches.create(requests=requests)


def test_batched_calls_are_in_the_ledger_marked_batch_for_the_half_price(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    control(sim, "/_sim/ledger", "DELETE")
    request = params("Price this request", metadata={"user_id": "cost-task"})
    interactive = client.messages.create(**request)
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "half", "params": request},
            {"custom_id": "other", "params": request},
        ]
    )
    ended(client, batch.id)
    batched = results(client, batch.id)

    report = control(sim, "/_sim/ledger?user_id=cost-task")
    calls = report["calls"]
    assert [c["batch"] for c in calls] == [False, True, True]
    assert [(c["batch_id"], c["custom_id"]) for c in calls[1:]] == [
        (batch.id, "half"),
        (batch.id, "other"),
    ]
    assert calls[1]["request_id"] == batched["half"].message.id
    assert set(calls[1]["usage"]) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    totals, batch_totals = report["totals"][MODEL], report["batch_totals"][MODEL]
    assert totals["calls"] == 3
    assert batch_totals["calls"] == 2
    assert batch_totals["input_tokens"] == 2 * interactive.usage.input_tokens
    assert batch_totals["output_tokens"] == 2 * interactive.usage.output_tokens

    price = {"input_tokens": 2.0, "output_tokens": 10.0}  # $ per MTok

    def cost(usage: dict[str, int]) -> float:
        return sum(usage[name] * rate for name, rate in price.items()) / 1e6

    factor = report["batch_price_factor"]
    standard = {k: totals[k] - batch_totals[k] for k in price}
    billed = cost(standard) + factor * cost(batch_totals)
    one_interactive = cost(interactive.usage.model_dump())
    assert factor == 0.5
    assert billed == pytest.approx(one_interactive * 2)  # 1 full price + 2 at half price


def test_batched_requests_draw_no_faults_from_the_messages_fault_plan(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    control(sim, "/_sim/faults", "POST", {"schedule": ["rate_limit"]})
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params("Hi")}])
    assert ended(client, batch.id).request_counts.succeeded == 1
    with pytest.raises(anthropic.RateLimitError):  # the scheduled fault is still there
        client.messages.create(**params("Hi"))
