"""The simulator fails like the real API, bills like it, and caches like it."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from simulator import BackgroundSimulator, SimulatorConfig

SYSTEM = "You are a careful analyst. " * 400  # about 2,700 tokens: above the cache minimum


def sdk(sim: BackgroundSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0)


def get(sim: BackgroundSimulator, path: str) -> Any:
    with urllib.request.urlopen(f"{sim.url}{path}", timeout=5) as answer:
        return json.loads(answer.read())


def ask(client: anthropic.Anthropic, model: str = "claude-haiku-5-5", **extra: Any) -> Any:
    return client.messages.with_raw_response.create(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": "Summarize the findings"}],
        **extra,
    )


@pytest.fixture
def faulty() -> Iterator[BackgroundSimulator]:
    config = SimulatorConfig(
        fault_schedule=("rate_limit", "overloaded", "server_error", "spend_limit", "prose", "ok"),
        retry_after=1.5,
    )
    with BackgroundSimulator(config) as sim:
        yield sim


def test_scheduled_faults_come_back_as_the_sdks_error_types(faulty: BackgroundSimulator) -> None:
    client = sdk(faulty)
    with pytest.raises(anthropic.RateLimitError) as limited:
        ask(client)
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.response.headers["retry-after-ms"] == "1500"
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        ask(client)
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.InternalServerError) as server_error:
        ask(client)
    assert server_error.value.status_code == 500
    with pytest.raises(anthropic.RateLimitError) as spend:
        ask(client)
    assert "usage limits" in str(spend.value)
    assert "retry-after" not in spend.value.response.headers
    prose = ask(client, output_config={"format": {"type": "json_schema", "schema": {}}}).parse()
    with pytest.raises(json.JSONDecodeError):  # prose where JSON was asked for
        json.loads(prose.content[0].text)
    assert get(faulty, "/_sim/faults")["injected"] == {
        "rate_limit": 1,
        "overloaded": 1,
        "server_error": 1,
        "spend_limit": 1,
        "prose": 1,
    }


def test_the_ledger_bills_answered_calls_only(faulty: BackgroundSimulator) -> None:
    client = sdk(faulty)
    answered = []
    for _ in range(6):
        with contextlib.suppress(anthropic.APIStatusError):
            answered.append(ask(client, metadata={"user_id": "task-1"}).parse())

    report = get(faulty, "/_sim/ledger?user_id=task-1")
    assert [c["request_id"] for c in report["calls"]] == [m.id for m in answered]
    assert len(answered) == 2  # the prose answer and the normal one
    totals = report["totals"]["claude-haiku-5-5"]
    assert totals["calls"] == 2
    assert totals["input_tokens"] == sum(m.usage.input_tokens for m in answered)
    assert totals["output_tokens"] == sum(m.usage.output_tokens for m in answered)
    assert get(faulty, "/_sim/ledger?user_id=someone-else")["calls"] == []


def test_rate_limits_answer_429_with_headers_once_the_bucket_is_empty() -> None:
    with BackgroundSimulator(SimulatorConfig(rpm=2)) as sim:
        client = sdk(sim)
        first = ask(client)
        assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
        ask(client)
        with pytest.raises(anthropic.RateLimitError) as limited:
            ask(client)
        headers = limited.value.response.headers
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert 0 < float(headers["retry-after-ms"]) <= 60_000
        ask(client, model="claude-sonnet-5-5")  # limits are per model


def test_input_token_limit_counts_the_prompt() -> None:
    with BackgroundSimulator(SimulatorConfig(itpm=3_000)) as sim:
        client = sdk(sim)
        ask(client, system=SYSTEM)
        with pytest.raises(anthropic.RateLimitError):
            ask(client, system=SYSTEM)


def cached_system(ttl: str | None = None) -> list[dict[str, Any]]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        control["ttl"] = ttl
    return [{"type": "text", "text": SYSTEM, "cache_control": control}]


def test_a_repeated_prefix_is_written_once_then_read() -> None:
    with BackgroundSimulator() as sim:
        client = sdk(sim)
        first = ask(client, system=cached_system()).parse().usage
        second = ask(client, system=cached_system()).parse().usage
        other_model = ask(client, model="claude-sonnet-5-5", system=cached_system()).parse().usage

    assert first.cache_creation_input_tokens > 1024
    assert first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens  # only the uncached tail is full price
    assert other_model.cache_creation_input_tokens == first.cache_creation_input_tokens


def test_prefixes_below_the_minimum_and_unmarked_prompts_are_not_cached() -> None:
    with BackgroundSimulator() as sim:
        client = sdk(sim)
        short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
        for _ in range(2):
            usage = ask(client, system=short).parse().usage
            assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
            usage = ask(client, system=SYSTEM).parse().usage
            assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0


def test_count_tokens_matches_the_billed_prompt_with_caching() -> None:
    with BackgroundSimulator() as sim:
        client = sdk(sim)
        usage = ask(client, system=cached_system("1h")).parse().usage
        counted = client.messages.count_tokens(
            model="claude-haiku-5-5",
            system=cached_system("1h"),  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "Summarize the findings"}],
        ).input_tokens
    assert counted == usage.input_tokens + usage.cache_creation_input_tokens
