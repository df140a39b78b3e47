"""The simulator calls client tools the way Claude does, and checks tool loops as the API does."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import pytest

from simulator import BackgroundSimulator

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}
CLOCK = {
    "name": "get_time",
    "description": "Local time in a timezone.",
    "input_schema": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}, "hours_ahead": {"type": "integer"}},
        "required": ["timezone"],
    },
}
NEWS = {
    "name": "search_news",
    "description": "Search recent news articles.",
    "input_schema": {
        "type": "object",
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "maximum": 5}},
        "required": ["query"],
    },
}
QUESTION = "What is the weather and the local time in Paris?"
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "temperature": {"type": "number"}},
    "required": ["summary", "temperature"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSimulator]:
    with BackgroundSimulator() as running:
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
def clean(sim: BackgroundSimulator) -> Iterator[None]:
    yield
    control(sim, "/_sim/scripts", "DELETE")
    control(sim, "/_sim/tools", "DELETE")


def ask(client: anthropic.Anthropic, messages: list[Any], **extra: Any) -> Any:
    request: dict[str, Any] = {"tools": [WEATHER, CLOCK], **extra}
    return client.messages.create(
        model="claude-haiku-5-5", max_tokens=400, messages=messages, **request
    )


def error_of(exc: anthropic.APIStatusError) -> Any:
    assert isinstance(exc.body, dict)
    return exc.body["error"]


def results_for(message: Any, *, failing: str | None = None) -> list[dict[str, Any]]:
    """A tool_result for every tool_use: one as a string, the failing one as text blocks."""
    out: list[dict[str, Any]] = []
    for block in message.content:
        if block.type != "tool_use":
            continue
        if block.name == failing:
            content: Any = [{"type": "text", "text": "the weather service timed out"}]
            out.append(
                {
                    "type": "tool_result",
                    "tool_use_id": block.id,
                    "content": content,
                    "is_error": True,
                }
            )
        else:
            out.append({"type": "tool_result", "tool_use_id": block.id, "content": "14:05 CET"})
    return out


def test_two_turn_loop_calls_two_tools_in_parallel_then_answers_from_every_result(
    client: anthropic.Anthropic,
) -> None:
    first_turn = [{"role": "user", "content": QUESTION}]
    first = ask(client, first_turn)

    assert first.stop_reason == "tool_use"
    assert first.content[0].type == "text"  # a short preamble, as Claude often writes
    calls = [b for b in first.content if b.type == "tool_use"]
    assert sorted(c.name for c in calls) == ["get_time", "get_weather"]
    assert len({c.id for c in calls}) == 2
    assert all(c.id.startswith("toolu_") for c in calls)
    schemas = {t["name"]: t["input_schema"] for t in (WEATHER, CLOCK)}
    for call in calls:
        jsonschema.validate(call.input, schemas[call.name])

    second_turn = [
        *first_turn,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": results_for(first, failing="get_weather")},
    ]
    second = ask(client, second_turn)

    assert second.stop_reason == "end_turn"
    (block,) = second.content
    assert block.type == "text"
    assert "2 tool result(s), 1 of them errors" in block.text
    assert "paris" in block.text
    # Each turn is billed for the whole conversation, tool definitions included.
    assert second.usage.input_tokens > first.usage.input_tokens
    for turn, message in ((first_turn, first), (second_turn, second)):
        counted = client.messages.count_tokens(
            model="claude-haiku-5-5", messages=turn, tools=[WEATHER, CLOCK]
        )
        assert counted.input_tokens == message.usage.input_tokens


def test_tool_definitions_count_as_input_tokens(client: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    bare = client.messages.count_tokens(model="claude-haiku-5-5", messages=messages)
    with_tools = client.messages.count_tokens(
        model="claude-haiku-5-5", messages=messages, tools=[WEATHER, CLOCK]
    )
    assert with_tools.input_tokens > bare.input_tokens + 40


def test_disable_parallel_tool_use_calls_one_tool_the_most_relevant(
    client: anthropic.Anthropic,
) -> None:
    message = ask(
        client,
        [{"role": "user", "content": "Is there news about the weather in Oslo?"}],
        tools=[CLOCK, WEATHER, NEWS],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    (call,) = [b for b in message.content if b.type == "tool_use"]
    assert call.name == "get_weather"  # shares "weather" with the question; ties keep order


def test_tool_choice_none_answers_and_any_calls_a_tool_every_turn(
    client: anthropic.Anthropic,
) -> None:
    none = ask(client, [{"role": "user", "content": QUESTION}], tool_choice={"type": "none"})
    assert none.stop_reason == "end_turn"
    assert [b.type for b in none.content] == ["text"]

    turns: list[Any] = [{"role": "user", "content": QUESTION}]
    for _ in range(3):  # `any` obliges a tool call even after the results are in
        message = ask(client, turns, tool_choice={"type": "any"})
        assert message.stop_reason == "tool_use"
        turns += [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": results_for(message)},
        ]


def test_final_answer_is_schema_json_when_output_config_asks_for_it(
    client: anthropic.Anthropic,
) -> None:
    output = {"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}}
    turns: list[Any] = [{"role": "user", "content": QUESTION}]
    first = ask(client, turns, output_config=output)
    assert first.stop_reason == "tool_use"
    turns += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": results_for(first)},
    ]
    final = ask(client, turns, output_config=output)
    assert final.stop_reason == "end_turn"
    jsonschema.validate(json.loads(final.content[0].text), ANSWER_SCHEMA)


def test_a_missing_tool_result_is_a_400_naming_the_unanswered_ids(
    client: anthropic.Anthropic,
) -> None:
    first = ask(client, [{"role": "user", "content": QUESTION}])
    ids = [b.id for b in first.content if b.type == "tool_use"]
    history: list[Any] = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.content},
    ]
    only_one = [{"type": "tool_result", "tool_use_id": ids[0], "content": "sunny"}]
    with pytest.raises(anthropic.BadRequestError) as missing:
        ask(client, [*history, {"role": "user", "content": only_one}])
    assert error_of(missing.value) == {
        "type": "invalid_request_error",
        "message": "messages.1: `tool_use` ids were found without `tool_result` blocks "
        f"immediately after: {ids[1]}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message.",
    }

    text_first = [{"type": "text", "text": "Here you go"}, *results_for(first)]
    with pytest.raises(anthropic.BadRequestError, match="without `tool_result` blocks"):
        ask(client, [*history, {"role": "user", "content": text_first}])

    with pytest.raises(anthropic.BadRequestError, match="without `tool_result` blocks"):
        ask(client, [*history, {"role": "user", "content": "and the time?"}])

    stray = [*results_for(first), {"type": "tool_result", "tool_use_id": "toolu_x", "content": ""}]
    with pytest.raises(anthropic.BadRequestError) as unexpected:
        ask(client, [*history, {"role": "user", "content": stray}])
    assert "messages.2.content.2: unexpected `tool_use_id` found in `tool_result` blocks: " in str(
        unexpected.value
    )
    with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
        client.messages.count_tokens(
            model="claude-haiku-5-5", messages=[*history, {"role": "user", "content": "hm"}]
        )


def test_a_script_pins_an_exact_call_sequence_matched_by_the_system_prompt(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    plan = [
        {
            "text": "Let me look both up.",
            "tool_calls": [
                {"name": "get_weather", "input": {"city": "Lyon", "unit": "celsius"}},
                {"name": "get_time", "input": {"timezone": "Europe/Paris"}},
            ],
        },
        {"tool_calls": [{"name": "get_weather", "input": {"city": "Nice", "unit": "celsius"}}]},
        {"text": "Lyon is mild, Nice is warmer."},
    ]
    control(sim, "/_sim/scripts", "POST", {"match": "agent-7f3a", "responses": plan})
    system = "You are agent-7f3a, a travel assistant."
    turns: list[Any] = [{"role": "user", "content": "Compare two cities"}]
    seen: list[list[tuple[str, dict[str, Any]]]] = []
    for _ in range(3):
        message = ask(client, turns, system=system)
        if message.stop_reason != "tool_use":
            break
        seen.append([(b.name, b.input) for b in message.content if b.type == "tool_use"])
        turns += [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": results_for(message)},
        ]

    assert seen == [
        [
            ("get_weather", {"city": "Lyon", "unit": "celsius"}),
            ("get_time", {"timezone": "Europe/Paris"}),
        ],
        [("get_weather", {"city": "Nice", "unit": "celsius"})],
    ]
    assert message.content[0].text == "Lyon is mild, Nice is warmer."  # type: ignore[union-attr]
    assert control(sim, "/_sim/scripts")["scripts"] == []


def test_a_script_matches_any_text_of_the_request_not_only_its_first_block(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    control(sim, "/_sim/scripts", "POST", {"match": "ref-991", "responses": [{"text": "pinned"}]})
    content = [{"type": "text", "text": "A question"}, {"type": "text", "text": "context ref-991"}]
    message = ask(client, [{"role": "user", "content": content}])
    assert message.content[0].text == "pinned"


def test_tool_turns_and_parallelism_are_configurable_at_run_time(
    sim: BackgroundSimulator, client: anthropic.Anthropic
) -> None:
    assert control(sim, "/_sim/tools", "POST", {"turns": 2, "parallel": 1, "preamble": False}) == {
        "turns": 2,
        "parallel": 1,
        "preamble": False,
    }
    turns: list[Any] = [{"role": "user", "content": QUESTION}]
    called = []
    while True:
        message = ask(client, turns)
        if message.stop_reason != "tool_use":
            break
        assert [b.type for b in message.content] == ["tool_use"]
        called.append(message.content[0].name)
        turns += [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": results_for(message)},
        ]
    assert called == ["get_time", "get_weather"]  # most relevant first, one per turn
    # A new question starts a new loop.
    turns += [{"role": "assistant", "content": message.content}]
    turns += [{"role": "user", "content": "And in Rome?"}]
    assert ask(client, turns).stop_reason == "tool_use"
