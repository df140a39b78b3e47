"""Scripted answers: tests pin exactly what the model says, misbehaviour included.

A script matches a request when its `match` string occurs anywhere in the request's text: the
system prompt or any text of any message, tool results included (see
`conversation.search_text`). So a marker in an agent's system prompt or in the question keeps
matching across every turn of one tool loop. The first script (in the order they were added)
that matches answers with its next response; when its responses run out it is dropped and
the generated answers resume. Responses are used verbatim, unchecked against the request:

- `{"tool_calls": [{"name": "...", "input": {...}}, ...]}`: one turn of tool_use blocks
  (`stop_reason: tool_use`), with an optional `"text"` before them and an optional `"id"` per
  call;
- `{"tool_input": {...}}`: the final answer's JSON (the forced tool's input, the
  `output_config.format` JSON text, or else that JSON as text);
- `{"text": "..."}`: prose as the final answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ScriptError(ValueError):
    pass


@dataclass
class Script:
    match: str
    responses: list[dict[str, Any]] = field(default_factory=list)


def _check_response(response: object) -> None:
    if not isinstance(response, dict) or not ({"tool_calls", "tool_input", "text"} & set(response)):
        raise ScriptError("each response needs tool_calls, tool_input or text")
    if "tool_calls" not in response:
        return
    calls = response["tool_calls"]
    if not isinstance(calls, list) or not calls:
        raise ScriptError("tool_calls: a non-empty list is required")
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise ScriptError("each tool call needs a name")
        if not isinstance(call.get("input", {}), dict):
            raise ScriptError("a tool call's input is a JSON object")
    if "text" in response and not isinstance(response["text"], str):
        raise ScriptError("text before tool calls must be a string")


class ScriptBook:
    """Lives on the server's event loop thread; no locking needed."""

    def __init__(self) -> None:
        self._scripts: list[Script] = []

    def add(self, data: object) -> Script:
        if not isinstance(data, dict):
            raise ScriptError("a script is a JSON object")
        match, responses = data.get("match"), data.get("responses")
        if not isinstance(match, str) or not match:
            raise ScriptError("match: a non-empty string is required")
        if not isinstance(responses, list) or not responses:
            raise ScriptError("responses: a non-empty list is required")
        for response in responses:
            _check_response(response)
        script = Script(match, list(responses))
        self._scripts.append(script)
        return script

    def take(self, text: str) -> dict[str, Any] | None:
        """The next response of the first script whose match occurs in `text`."""
        for script in self._scripts:
            if script.match in text and script.responses:
                response = script.responses.pop(0)
                if not script.responses:
                    self._scripts.remove(script)
                return response
        return None

    def clear(self) -> None:
        self._scripts.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [{"match": s.match, "remaining": len(s.responses)} for s in self._scripts]
