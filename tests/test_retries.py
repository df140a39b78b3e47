"""The one retry layer: what is retried, how long it waits, and when it gives up."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from messages import Summary
from simulator import BackgroundSimulator, SimulatorConfig
from workers.claude import ClaudeClient, StructuredResult
from workers.retry import ModelCallError, RetryPolicy, call_with_retries
from workers.settings import Settings


@pytest.fixture
def sim() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator(SimulatorConfig(hang_seconds=5)) as running:
        yield running


def schedule(sim: BackgroundSimulator, faults: list[str], **options: Any) -> None:
    request = urllib.request.Request(
        f"{sim.url}/_sim/faults",
        data=json.dumps({"schedule": faults, **options}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()


def injected(sim: BackgroundSimulator) -> dict[str, int]:
    with urllib.request.urlopen(f"{sim.url}/_sim/faults", timeout=5) as answer:
        report: dict[str, int] = json.loads(answer.read())["injected"]
    return report


def client(sim: BackgroundSimulator, **overrides: Any) -> ClaudeClient:
    settings = Settings(
        anthropic_base_url=sim.url,
        anthropic_api_key="sim-key",
        call_timeout=overrides.pop("call_timeout", 5.0),
        call_retries=overrides.pop("call_retries", 3),
        retry_base_delay=0.05,
    )
    return ClaudeClient(settings)


def ask(claude: ClaudeClient) -> StructuredResult:
    return claude.structured(
        model="claude-haiku-4-5",
        system="Summarize.",
        user_blocks=["Summarize the tradeoffs of Redis as a message broker"],
        output_model=Summary,
        max_tokens=512,
    )


def test_rate_limit_waits_as_long_as_retry_after_ms_asks(sim: BackgroundSimulator) -> None:
    schedule(sim, ["rate_limit", "ok"], retry_after=0.4)
    started = time.perf_counter()
    result = ask(client(sim))

    assert result.output is not None
    (retry,) = result.replies[0].retries
    assert retry.status == 429
    assert retry.wait_seconds == 0.4
    assert time.perf_counter() - started >= 0.4


def test_overloaded_and_server_errors_back_off_and_recover(sim: BackgroundSimulator) -> None:
    schedule(sim, ["overloaded", "server_error", "ok"])
    result = ask(client(sim))

    assert result.output is not None
    retries = result.replies[0].retries
    assert [r.status for r in retries] == [529, 500]
    assert all(0 < r.wait_seconds <= 0.1 for r in retries)  # base 0.05, doubled, jittered


def test_a_hang_times_out_and_is_retried(sim: BackgroundSimulator) -> None:
    schedule(sim, ["hang", "ok"])
    result = ask(client(sim, call_timeout=0.5))

    assert result.output is not None
    (retry,) = result.replies[0].retries
    assert retry.status is None
    assert "Timeout" in retry.error


def test_spend_limit_is_not_retried(sim: BackgroundSimulator) -> None:
    schedule(sim, ["spend_limit", "ok"])
    with pytest.raises(ModelCallError) as caught:
        ask(client(sim))

    assert caught.value.status == 429
    assert caught.value.retries == ()
    assert "usage limits" in str(caught.value)


def test_no_call_is_retried_more_than_the_limit(sim: BackgroundSimulator) -> None:
    schedule(sim, ["overloaded"] * 6)
    with pytest.raises(ModelCallError) as caught:
        ask(client(sim, call_retries=2))

    assert len(caught.value.retries) == 2
    assert "gave up after 2 retries" in str(caught.value)
    assert injected(sim) == {"overloaded": 3}  # the first attempt and two retries, no more


def test_client_errors_are_not_retried(sim: BackgroundSimulator) -> None:
    sdk = anthropic.Anthropic(base_url=sim.url, api_key="sim-key", max_retries=0)
    attempts = 0

    def bad_request() -> object:
        nonlocal attempts
        attempts += 1
        return sdk.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[])

    with pytest.raises(ModelCallError) as caught:
        call_with_retries(RetryPolicy(max_retries=3, base_delay=0.01), bad_request)
    assert caught.value.status == 400
    assert caught.value.retries == ()
    assert attempts == 1
