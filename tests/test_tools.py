"""Tools from plain functions, and running one turn's tool calls: real functions, real threads."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from workers.tool_exec import ToolCall, ToolOutcome, encode_output, run_tool_calls
from workers.tools import (
    Tool,
    ToolContext,
    ToolDefinitionError,
    ToolError,
    ToolInputError,
    tool_from_function,
)

WAIT = 5.0
"""Upper bound for a barrier or event that should be met at once; only a failure waits it out."""


def context_for(call: ToolCall) -> ToolContext:
    return ToolContext(task_id="task-1", message_id="msg-1", tool_use_id=call.id, agent="research")


def turn(*calls: ToolCall) -> list[ToolCall]:
    return list(calls)


def toolbox(*fns: Callable[..., Any], **options: Any) -> dict[str, Tool]:
    tools = [tool_from_function(fn, **options) for fn in fns]
    return {tool.name: tool for tool in tools}


# Declaring a tool


def search_notes(
    query: str, limit: int = 5, mode: Literal["exact", "fuzzy"] = "fuzzy"
) -> list[str]:
    """Search the team's notes.

    Matches titles first, then bodies.

    Args:
        query: Words to look for.
        limit: Most notes to return.
        mode: How strictly words must match.
    """
    return [f"{query}:{limit}:{mode}"]


def search_notes_numpy(query: str, limit: int = 5) -> list[str]:
    """Search the team's notes.

    Parameters
    ----------
    query : str
        Words to look for.
    limit : int, optional
        Most notes to return.
    """
    return [query] * limit


def search_notes_rest(query: str, limit: int = 5) -> list[str]:
    """Search the team's notes.

    :param query: Words to look for.
    :param limit: Most notes to return.
    """
    return [query] * limit


def test_the_schema_comes_from_the_type_hints_and_the_docstring() -> None:
    tool = tool_from_function(search_notes)

    assert tool.name == "search_notes"
    assert tool.description == "Search the team's notes.\n\nMatches titles first, then bodies."
    assert tool.input_schema == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for."},
            "limit": {"type": "integer", "default": 5, "description": "Most notes to return."},
            "mode": {
                "enum": ["exact", "fuzzy"],
                "type": "string",
                "default": "fuzzy",
                "description": "How strictly words must match.",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize("fn", [search_notes_numpy, search_notes_rest], ids=["numpy", "rest"])
def test_numpy_and_rest_docstrings_describe_the_arguments_too(fn: Callable[..., Any]) -> None:
    tool = tool_from_function(fn)

    assert tool.description == "Search the team's notes."
    properties = tool.input_schema["properties"]
    assert properties["query"]["description"] == "Words to look for."
    assert properties["limit"]["description"] == "Most notes to return."
    assert tool.input_schema["required"] == ["query"]


def test_omitted_arguments_take_their_defaults() -> None:
    tool = tool_from_function(search_notes)

    result = tool.invoke({"query": "redis"}, context_for(ToolCall("c1", "search_notes", {})))

    assert result == ["redis:5:fuzzy"]


class Window(BaseModel):
    start: int
    end: int = Field(description="Exclusive.")


def test_models_and_constraints_are_validated_and_the_function_gets_real_objects() -> None:
    seen: list[Window] = []

    def history(
        window: Window, top: Annotated[int, Field(ge=1, description="At least one.")]
    ) -> int:
        """Messages in a window.

        Args:
            top: Overridden by the Field's own description.
        """
        seen.append(window)
        return top

    tool = tool_from_function(history)
    context = context_for(ToolCall("c1", "history", {}))

    assert tool.invoke({"window": {"start": "3", "end": 9}, "top": 2}, context) == 2
    assert seen == [Window(start=3, end=9)]
    assert tool.input_schema["properties"]["top"] == {
        "type": "integer",
        "minimum": 1,
        "description": "At least one.",
    }
    assert tool.input_schema["$defs"]["Window"]["properties"]["end"]["description"] == "Exclusive."
    with pytest.raises(ToolInputError, match=r"top: Input should be greater than or equal to 1"):
        tool.invoke({"window": {"start": 1, "end": 2}, "top": 0}, context)


def test_a_tool_context_parameter_is_injected_and_left_out_of_the_schema() -> None:
    received: list[ToolContext] = []

    def remember(ctx: ToolContext, /, fact: str) -> str:
        """Store a fact once per call, however often the step is redelivered."""
        received.append(ctx)
        return ctx.idempotency_key

    tool = tool_from_function(remember)
    calls = turn(ToolCall("toolu_1", "remember", {"fact": "x"}))
    outcome = run_tool_calls({tool.name: tool}, calls, context_for)[0]

    assert tool.input_schema["properties"] == {"fact": {"type": "string"}}
    assert tool.input_schema["required"] == ["fact"]
    expected = ToolContext(
        task_id="task-1", message_id="msg-1", tool_use_id="toolu_1", agent="research"
    )
    assert received == [expected]
    assert outcome.output == expected.idempotency_key


def test_an_optional_tool_context_is_injected_too() -> None:
    def whoami(ctx: ToolContext | None = None) -> str:
        return ctx.agent if ctx else "nobody"

    tool = tool_from_function(whoami)

    assert tool.input_schema["properties"] == {}
    assert tool.invoke({}, context_for(ToolCall("c1", "whoami", {}))) == "research"


def test_the_idempotency_key_is_stable_across_redeliveries_and_differs_per_call() -> None:
    first = ToolContext(task_id="t", message_id="m", tool_use_id="toolu_1", agent="a")
    redelivered = ToolContext(task_id="t", message_id="m", tool_use_id="toolu_1", agent="b")
    another_call = ToolContext(task_id="t", message_id="m", tool_use_id="toolu_2", agent="a")
    another_step = ToolContext(task_id="t", message_id="m2", tool_use_id="toolu_1", agent="a")

    assert first.idempotency_key == redelivered.idempotency_key
    keys = {first.idempotency_key, another_call.idempotency_key, another_step.idempotency_key}
    assert len(keys) == 3
    # The separator cannot be forged by the ids themselves.
    assert ToolContext(
        task_id="a", message_id="b c", tool_use_id="d", agent="x"
    ).idempotency_key != (
        ToolContext(task_id="a b", message_id="c", tool_use_id="d", agent="x").idempotency_key
    )


def unannotated(query) -> str:  # type: ignore[no-untyped-def]
    return str(query)


def star_args(*words: str) -> str:
    return " ".join(words)


def star_kwargs(**options: str) -> str:
    return str(options)


async def asynchronous(query: str) -> str:
    return query


def untyped_arg(query: Any, sock: threading.Lock) -> str:
    return query


def two_contexts(a: ToolContext, b: ToolContext) -> str:
    return a.agent + b.agent


@pytest.mark.parametrize(
    ("fn", "options", "fix"),
    [
        (unannotated, {}, r"parameter 'query' .* has no type annotation; annotate it"),
        (star_args, {}, r"takes \*words: .* replace it with explicit ones"),
        (star_kwargs, {}, r"takes \*\*options: .* replace it with explicit ones"),
        (asynchronous, {}, r"is async: async tools are not supported yet"),
        (lambda query: query, {}, r"tool name '<lambda>' must match .* pass name="),
        (search_notes, {"name": "search notes"}, r"tool name 'search notes' must match"),
        (search_notes, {"name": "x" * 65}, r"must match"),
        (untyped_arg, {}, r"cannot build the input schema .* use JSON-able types"),
        (two_contexts, {}, r"more than one ToolContext parameter"),
    ],
    ids=[
        "no-annotation",
        "args",
        "kwargs",
        "async",
        "lambda",
        "space",
        "too-long",
        "bad-type",
        "two-contexts",
    ],
)
def test_functions_that_cannot_be_tools_are_refused_with_the_fix(
    fn: Callable[..., Any], options: dict[str, Any], fix: str
) -> None:
    with pytest.raises(ToolDefinitionError, match=fix):
        tool_from_function(fn, **options)


def test_a_lambda_is_a_tool_once_it_is_named_and_typed() -> None:
    double: Callable[[int], int] = lambda n: 2 * n  # noqa: E731
    double.__annotations__ = {"n": int}

    tool = tool_from_function(double, name="double", description="Twice n.")

    assert (tool.name, tool.description) == ("double", "Twice n.")
    assert tool.invoke({"n": 4}, context_for(ToolCall("c", "double", {}))) == 8


def test_to_api_is_a_messages_api_tools_entry_and_a_copy() -> None:
    tool = tool_from_function(search_notes, requires_approval=True, timeout=2.0)

    entry = tool.to_api()
    entry["input_schema"]["properties"].clear()

    assert list(entry) == ["name", "description", "input_schema"]
    assert entry["name"] == "search_notes"
    assert tool.input_schema["properties"], "to_api must not hand out the tool's own schema"
    assert (tool.requires_approval, tool.timeout) == (True, 2.0)


def test_a_tool_without_a_docstring_has_no_description_entry() -> None:
    def ping() -> str:
        return "pong"

    assert tool_from_function(ping).to_api() == {
        "name": "ping",
        "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    }


# Running a turn


def test_the_calls_of_one_turn_run_at_the_same_time() -> None:
    everyone = threading.Barrier(4, timeout=WAIT)

    def meet(name: str) -> str:
        everyone.wait()  # only returns once all four calls are running together
        return name

    calls = [ToolCall(f"c{i}", "meet", {"name": f"n{i}"}) for i in range(4)]
    outcomes = run_tool_calls(toolbox(meet), calls, context_for, max_parallel=4)

    assert [o.output for o in outcomes] == ["n0", "n1", "n2", "n3"]


def test_no_more_than_max_parallel_calls_run_at_once() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0
    pair = threading.Barrier(2, timeout=WAIT)

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        pair.wait()  # two at a time always overlap; a third would have to be extra
        with lock:
            running -= 1
        return n

    calls = [ToolCall(f"c{i}", "work", {"n": i}) for i in range(6)]
    outcomes = run_tool_calls(toolbox(work), calls, context_for, max_parallel=2)

    assert [o.output for o in outcomes] == ["0", "1", "2", "3", "4", "5"]
    assert peak == 2


def test_outcomes_come_back_in_call_order_whatever_order_the_calls_finish_in() -> None:
    finished = [threading.Event() for _ in range(4)]
    order: list[int] = []

    def step(n: int) -> int:
        if n + 1 < len(finished):  # each call waits for the next one: the last finishes first
            assert finished[n + 1].wait(WAIT)
        order.append(n)
        finished[n].set()
        return n

    calls = [ToolCall(f"c{i}", "step", {"n": i}) for i in range(4)]
    outcomes = run_tool_calls(toolbox(step), calls, context_for)

    assert order == [3, 2, 1, 0]
    assert [o.tool_use_id for o in outcomes] == ["c0", "c1", "c2", "c3"]
    assert [o.output for o in outcomes] == ["0", "1", "2", "3"]


def test_a_tool_that_raises_goes_back_to_the_model_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def divide(a: float, b: float) -> float:
        return a / b

    with caplog.at_level(logging.ERROR, logger="workers.tool_exec"):
        outcome = run_tool_calls(
            toolbox(divide), turn(ToolCall("c1", "divide", {"a": 1, "b": 0})), context_for
        )[0]

    assert outcome.error == "ZeroDivisionError: float division by zero"
    assert outcome.output is None
    assert "Traceback" not in outcome.error
    assert any(r.exc_info and "task-1" in r.getMessage() for r in caplog.records), (
        "logged with its traceback"
    )
    assert outcome.to_result_block() == {
        "type": "tool_result",
        "tool_use_id": "c1",
        "content": "ZeroDivisionError: float division by zero",
        "is_error": True,
    }


def test_a_tool_error_reaches_the_model_word_for_word() -> None:
    def open_note(title: str) -> str:
        raise ToolError(f"there is no note titled {title!r}; try search_notes first")

    outcome = run_tool_calls(
        toolbox(open_note), turn(ToolCall("c1", "open_note", {"title": "x"})), context_for
    )[0]

    assert outcome.error == "there is no note titled 'x'; try search_notes first"


def test_invalid_arguments_are_refused_before_the_function_runs() -> None:
    ran: list[object] = []

    def record(count: int, label: str) -> str:
        ran.append((count, label))
        return "recorded"

    calls = turn(
        ToolCall("c1", "record", {"count": "many", "labl": "x"}),
        ToolCall("c2", "record", {"count": "3", "label": "ok"}),
    )
    bad, good = run_tool_calls(toolbox(record), calls, context_for)

    assert bad.error is not None
    assert bad.error.startswith("Invalid arguments for tool 'record': ")
    assert "count: Input should be a valid integer" in bad.error
    assert "(got 'many')" in bad.error
    assert "label: Field required" in bad.error
    assert "labl: Extra inputs are not permitted" in bad.error
    assert "errors.pydantic.dev" not in bad.error
    assert good.output == "recorded"
    assert ran == [(3, "ok")]


def test_an_unknown_tool_is_an_error_that_lists_the_known_tools() -> None:
    outcome = run_tool_calls(
        toolbox(search_notes, search_notes_numpy),
        turn(ToolCall("c1", "delete_everything", {})),
        context_for,
    )[0]

    assert outcome.error == (
        "Unknown tool 'delete_everything'; the known tools are: search_notes, search_notes_numpy"
    )


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """An event the hung tool waits on; set at the end so its abandoned thread can finish."""
    release = threading.Event()
    yield release
    release.set()


def test_a_call_past_its_timeout_is_abandoned_and_reported_while_the_others_finish(
    stuck: threading.Event,
) -> None:
    def hang() -> str:
        stuck.wait()
        return "too late"

    def quick() -> str:
        return "done"

    tools = {
        "hang": tool_from_function(hang, timeout=0.2),
        "hang_default": tool_from_function(hang, name="hang_default"),
        "quick": tool_from_function(quick),
    }
    calls = turn(
        ToolCall("c1", "hang", {}), ToolCall("c2", "hang_default", {}), ToolCall("c3", "quick", {})
    )
    own, default, fine = run_tool_calls(tools, calls, context_for, default_timeout=0.3)

    assert own.error == "Tool 'hang' timed out after 0.2 s"
    assert default.error == "Tool 'hang_default' timed out after 0.3 s"
    assert 200 <= own.duration_ms < 2000
    assert fine.output == "done"


class Note(BaseModel):
    title: str
    tags: list[str] = []


def test_return_values_are_sent_as_text_or_json() -> None:
    assert encode_output("plain text") == "plain text"
    assert encode_output(Note(title="a", tags=["x"])) == '{"title":"a","tags":["x"]}'
    assert json.loads(encode_output({"n": 1, "notes": [Note(title="b")]})) == {
        "n": 1,
        "notes": [{"title": "b", "tags": []}],
    }
    assert encode_output(None) == "null"


def test_a_return_value_that_is_not_json_is_an_error() -> None:
    def leak() -> object:
        return threading.Lock()

    outcome = run_tool_calls(toolbox(leak), turn(ToolCall("c1", "leak", {})), context_for)[0]

    assert outcome.error is not None
    assert outcome.error.startswith("Tool 'leak' returned a lock that is not JSON")


def test_an_outcome_answers_its_call_as_a_tool_result_block() -> None:
    ok = ToolOutcome("toolu_1", "search_notes", {"query": "q"}, '["q"]', None, 1.5)

    assert ok.to_result_block() == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": '["q"]',
        "is_error": False,
    }
    assert ToolCall.from_block(
        {"type": "tool_use", "id": "toolu_1", "name": "n", "input": {"a": 1}}
    ) == (ToolCall("toolu_1", "n", {"a": 1}))


def test_an_empty_turn_runs_nothing() -> None:
    assert run_tool_calls({}, [], context_for) == []
