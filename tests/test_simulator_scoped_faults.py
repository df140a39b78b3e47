"""Scoped fault plans: a test's faults reach only the requests that carry its marker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from simulator import BackgroundSimulator


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator() as running:
        yield running


@pytest.fixture(scope="module")
def client(sim: BackgroundSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=0)


def faults(sim: BackgroundSimulator, method: str = "GET", body: Any = None, query: str = "") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{sim.url}/_sim/faults{query}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture(autouse=True)
def clean(sim: BackgroundSimulator) -> Iterator[None]:
    yield
    faults(sim, "DELETE")
    faults(sim, "POST", {"rates": {}, "schedule": []})


def ask(client: anthropic.Anthropic, text: str, system: str = "You are a test.") -> Any:
    return client.messages.create(
        model="claude-haiku-5-5",
        max_tokens=200,
        system=system,
        messages=[{"role": "user", "content": text}],
    )


def test_a_scoped_schedule_is_consumed_only_by_requests_containing_its_match(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    faults(sim, "POST", {"match": "test-A-91", "schedule": ["overloaded", "rate_limit"]})

    ask(client, "another test's request")  # not consumed by someone else
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        ask(client, "Summarize", system="You are agent test-A-91.")  # matched in the system
    assert overloaded.value.status_code == 529
    ask(client, "another test's request")
    with pytest.raises(anthropic.RateLimitError):
        ask(client, "Summarize test-A-91 again")  # matched in the messages
    ask(client, "Summarize test-A-91 once more")  # its schedule is used up

    report = faults(sim)
    assert report["injected"] == {}  # the global plan injected nothing
    assert report["scoped"] == [
        {
            "match": "test-A-91",
            "rates": {},
            "schedule": [],
            "retry_after": 0.2,
            "hang_seconds": 3600.0,
            "injected": {"overloaded": 1, "rate_limit": 1},
        }
    ]


def test_a_matching_request_draws_from_its_scoped_plan_not_the_global_one(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    faults(sim, "POST", {"schedule": ["server_error"]})
    faults(sim, "POST", {"match": "scope-B", "schedule": ["ok", "truncate"]})

    assert ask(client, "scope-B first").stop_reason == "end_turn"  # its "ok", not the 500
    assert ask(client, "scope-B second").stop_reason == "max_tokens"
    with pytest.raises(anthropic.InternalServerError) as global_fault:
        ask(client, "unscoped")
    assert global_fault.value.status_code == 500
    assert faults(sim)["injected"] == {"server_error": 1}


def test_scoped_rates_last_until_that_plan_is_deleted(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    faults(sim, "POST", {"match": "scope-C", "rates": {"overloaded": 1.0}})
    faults(sim, "POST", {"match": "scope-D", "rates": {"server_error": 1.0}})
    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError):
            ask(client, "scope-C")
        ask(client, "nothing scoped here")

    remaining = faults(sim, "DELETE", query="?match=scope-C")["scoped"]
    assert [plan["match"] for plan in remaining] == ["scope-D"]
    ask(client, "scope-C")
    with pytest.raises(anthropic.InternalServerError):
        ask(client, "scope-D")


def test_delete_without_match_clears_every_scoped_plan_and_keeps_the_global_one(
    sim: BackgroundSimulator,
) -> None:
    faults(sim, "POST", {"schedule": ["overloaded"]})
    faults(sim, "POST", {"match": "x", "schedule": ["hang"]})
    faults(sim, "POST", {"match": "y", "rates": {"prose": 0.5}})
    assert len(faults(sim)["scoped"]) == 2

    report = faults(sim, "DELETE")
    assert report["scoped"] == []
    assert report["schedule"] == ["overloaded"]


@pytest.mark.parametrize(
    "plan",
    [
        {"match": "", "schedule": ["overloaded"]},
        {"match": "z", "schedule": ["meltdown"]},
        {"match": "z", "rates": {"overloaded": 2}},
    ],
)
def test_a_bad_scoped_plan_is_refused_with_400(
    sim: BackgroundSimulator, plan: dict[str, Any]
) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        faults(sim, "POST", plan)
    assert refused.value.code == 400
    assert faults(sim)["scoped"] == []
