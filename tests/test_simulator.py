"""The simulator speaks the Messages API well enough for the official SDK, over real HTTP."""

from __future__ import annotations

import datetime
import enum
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import anthropic
import pytest
from pydantic import BaseModel, Field

from simulator import BackgroundSimulator, SimulatorConfig, fill
from simulator.schema_fill import salient_words


class Severity(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Finding(BaseModel):
    claim: str
    source: str | None = None


class Report(BaseModel):
    title: str = Field(min_length=1, max_length=80)
    verdict: Literal["approve", "reject"]
    findings: list[Finding] = Field(min_length=1, max_length=3)
    tags: list[str] = Field(max_length=2)
    confidence: float = Field(ge=0, le=1)
    rounds: int = Field(ge=1, le=5)
    final: bool
    severity: Severity


ROUTE_SCHEMA = {
    "type": "object",
    "properties": {"agent": {"enum": ["research", "code_review", "summarizer", "critic"]}},
    "required": ["agent"],
}


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator() as running:
        yield running


@pytest.fixture(scope="module")
def client(sim: BackgroundSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="sim-test-key", max_retries=0)


def forced_tool(client: anthropic.Anthropic, text: str, schema: dict[str, Any]) -> Any:
    return client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=512,
        system="You are a test.",
        messages=[{"role": "user", "content": text}],
        tools=[{"name": "answer", "description": "Answer.", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "answer"},
    )


def test_forced_tool_answers_with_input_that_validates_against_the_schema(
    client: anthropic.Anthropic,
) -> None:
    message = forced_tool(client, "Review the launch plan", Report.model_json_schema())

    (block,) = message.content
    assert block.type == "tool_use"
    assert block.name == "answer"
    report = Report.model_validate(block.input)
    assert report.title.startswith("[simulated]")
    assert message.stop_reason == "tool_use"
    assert message.model == "claude-haiku-4-5"


def test_output_config_json_schema_answers_with_conforming_json_text(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=512,
        messages=[{"role": "user", "content": "Assess the migration"}],
        output_config={"format": {"type": "json_schema", "schema": Report.model_json_schema()}},
    )
    (block,) = message.content
    assert block.type == "text"
    Report.model_validate(json.loads(block.text))


def test_models_that_refuse_a_forced_tool_answer_400_like_the_api(
    client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"output_config\.format"):
        client.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "Review the plan"}],
            tools=[{"name": "answer", "input_schema": ROUTE_SCHEMA}],
            tool_choice={"type": "tool", "name": "answer"},
        )


def test_plain_requests_get_plainly_simulated_text(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "Tell me about queues"}],
    )
    (block,) = message.content
    assert block.type == "text"
    assert block.text.startswith("[simulated]")
    assert "queues" in block.text


def test_usage_is_realistic_and_count_tokens_agrees(client: anthropic.Anthropic) -> None:
    request: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "system": "You are a test.",
        "messages": [{"role": "user", "content": "Count the tokens of this request " * 20}],
    }
    message = client.messages.create(max_tokens=100, **request)
    counted = client.messages.count_tokens(**request)

    assert message.usage.input_tokens == counted.input_tokens
    assert 100 < message.usage.input_tokens < 400
    assert message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0


@pytest.mark.parametrize(
    ("text", "agent"),
    [
        ("Summarize the tradeoffs of Redis as a message broker", "summarizer"),
        ("Please review this code for bugs", "code_review"),
        ("Research the history of message queues", "research"),
        ("Critique my plan", "critic"),
    ],
)
def test_enum_choice_follows_the_request_words(
    client: anthropic.Anthropic, text: str, agent: str
) -> None:
    block = forced_tool(client, text, ROUTE_SCHEMA).content[0]
    assert block.input == {"agent": agent}


def test_same_request_gets_the_same_answer(client: anthropic.Anthropic) -> None:
    schema = Report.model_json_schema()
    first = forced_tool(client, "Weigh the options", schema).content[0]
    second = forced_tool(client, "Weigh the options", schema).content[0]
    assert first.input == second.input


def raw_post(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


MINIMAL = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_requests_without_a_key_are_refused(sim: BackgroundSimulator) -> None:
    status, body = raw_post(f"{sim.url}/v1/messages", {}, MINIMAL)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"


def test_x_api_key_header_is_accepted_like_bearer(sim: BackgroundSimulator) -> None:
    status, body = raw_post(f"{sim.url}/v1/messages", {"x-api-key": "old-style"}, MINIMAL)
    assert status == 200
    assert body["type"] == "message"


def test_configured_key_must_match() -> None:
    with BackgroundSimulator(SimulatorConfig(api_key="right")) as locked:
        wrong = anthropic.Anthropic(base_url=locked.url, api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            wrong.messages.create(model="m", max_tokens=5, messages=MINIMAL["messages"])


def test_bad_requests_get_anthropic_shaped_errors(sim: BackgroundSimulator) -> None:
    headers = {"x-api-key": "k"}
    status, body = raw_post(f"{sim.url}/v1/messages", headers, {"model": "m"})
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    status, body = raw_post(f"{sim.url}/v1/nothing", headers, MINIMAL)
    assert (status, body["error"]["type"]) == (404, "not_found_error")
    unknown_tool = {**MINIMAL, "tool_choice": {"type": "tool", "name": "ghost"}}
    status, body = raw_post(f"{sim.url}/v1/messages", headers, unknown_tool)
    assert status == 400
    assert "ghost" in body["error"]["message"]


def test_streaming_and_malformed_bodies_are_refused_with_400(sim: BackgroundSimulator) -> None:
    headers = {"x-api-key": "k"}
    status, body = raw_post(f"{sim.url}/v1/messages", headers, {**MINIMAL, "stream": True})
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert "streaming" in body["error"]["message"]
    request = urllib.request.Request(
        f"{sim.url}/v1/messages", data=b"{not json", headers=headers, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"]["type"] == "invalid_request_error"


def test_answers_carry_ids_and_the_simulated_marker_header(sim: BackgroundSimulator) -> None:
    request = urllib.request.Request(
        f"{sim.url}/v1/messages",
        data=json.dumps(MINIMAL).encode(),
        headers={"authorization": "Bearer k"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.headers["x-chorus-simulated"] == "true"
        assert answer.headers["request-id"].startswith("req_sim_")
        assert answer.headers["content-type"].startswith("application/json")
        body = json.loads(answer.read())
    assert body["id"].startswith("msg_sim_")
    assert body["stop_sequence"] is None
    assert body["usage"]["cache_creation_input_tokens"] == 0


def test_health_needs_no_key(sim: BackgroundSimulator) -> None:
    with urllib.request.urlopen(f"{sim.url}/health", timeout=5) as answer:
        health = json.loads(answer.read())
    assert health == {"status": "ok", "simulated": True, "rate_limited": 0}


def test_count_tokens_agrees_with_usage_for_tools_system_blocks_and_history(
    client: anthropic.Anthropic,
) -> None:
    request: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "lookup", "description": "Find.", "input_schema": ROUTE_SCHEMA}],
        "messages": [
            {"role": "user", "content": "Find the broker"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Redis"}],
            },
        ],
    }
    message = client.messages.create(max_tokens=100, **request)
    assert message.usage.input_tokens == client.messages.count_tokens(**request).input_tokens


class Awkward(BaseModel):
    below: int = Field(le=-5)
    under: float = Field(lt=-2)
    narrow: float = Field(ge=0.001, le=0.002)
    sevens: int = Field(multiple_of=7, ge=1)
    when: datetime.datetime
    day: datetime.date
    ident: uuid.UUID
    tiny: str = Field(max_length=5)
    long: str = Field(min_length=200)
    slug: str = Field(pattern=r"^[a-z]+$")
    pair: tuple[int, str]
    distinct: set[int] = Field(min_length=3)
    scores: dict[str, float] = Field(min_length=1)


def test_fill_respects_one_sided_bounds_formats_lengths_and_tuples() -> None:
    words = salient_words("Summarize the tradeoffs of Redis as a message broker")
    instance = fill(Awkward.model_json_schema(), words=words, seed=7)
    Awkward.model_validate(instance)
    assert instance["long"].startswith("[simulated]")
    assert "redis" in instance["long"]


def test_latency_is_honoured() -> None:
    with BackgroundSimulator(SimulatorConfig(latency=0.3)) as slow:
        client = anthropic.Anthropic(base_url=slow.url, api_key="k", max_retries=0)
        started = time.perf_counter()
        client.messages.create(model="m", max_tokens=5, messages=MINIMAL["messages"])
        assert time.perf_counter() - started >= 0.3


def test_twenty_slow_calls_in_flight_at_once_all_succeed() -> None:
    with BackgroundSimulator(SimulatorConfig(latency=0.5)) as slow:
        client = anthropic.Anthropic(base_url=slow.url, api_key="k", max_retries=0)

        def call(_: int) -> str:
            return client.messages.create(model="m", max_tokens=5, messages=MINIMAL["messages"]).id

        with ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(call, range(20)))
        assert len(set(ids)) == 20


def test_cli_prints_one_line_when_bound_and_exits_0_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        with urllib.request.urlopen(f"{line.split()[-1]}/health", timeout=5) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""
    finally:
        process.kill()


def test_main_takes_the_options_alone_and_tolerates_one_leading_double_dash() -> None:
    from simulator.cli import config_from_args

    argv = ["--port", "8765", "--latency", "0.5", "--tool-turns", "2", "--parallel-tools", "1"]
    argv += ["--no-tool-preamble", "--batch-delay", "0.1", "--batch-error-rate", "0.2"]
    config = config_from_args(argv)
    assert config_from_args(["--", *argv]) == config  # `chorus sim -- --port 8765 ...`
    assert (config.port, config.latency) == (8765, 0.5)
    assert (config.tool_turns, config.parallel_tools, config.tool_preamble) == (2, 1, False)
    assert (config.batch_delay, config.batch_error_rate, config.batch_expire_rate) == (0.1, 0.2, 0)
    for bad in (["--parallel-tools", "0"], ["--batch-expire-rate", "1.5"], ["--bogus"]):
        with pytest.raises(SystemExit) as refused:
            config_from_args(bad)
        assert refused.value.code == 2


def test_tests_cannot_reach_the_real_anthropic_api() -> None:
    from tests import conftest

    real = anthropic.Anthropic(api_key="sk-ant-not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        real.messages.create(model="m", max_tokens=5, messages=MINIMAL["messages"])
    assert conftest._blocked == ["api.anthropic.com"]
    conftest._blocked.clear()  # the guard worked; do not fail this test for it
