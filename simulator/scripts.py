"""Scripted answers: tests make the model misbehave on purpose, for one request only.

A script matches requests whose request text contains `match`, and answers the next such
requests with its `responses` in order (then the generated answers resume). Each response is
`{"tool_input": {...}}` (the forced tool is called with exactly that input) or `{"text": "..."}`
(prose instead of a tool call).
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
            if not isinstance(response, dict) or not ({"tool_input", "text"} & set(response)):
                raise ScriptError("each response needs tool_input or text")
        script = Script(match, list(responses))
        self._scripts.append(script)
        return script

    def take(self, request_text: str) -> dict[str, Any] | None:
        for script in self._scripts:
            if script.match in request_text and script.responses:
                response = script.responses.pop(0)
                if not script.responses:
                    self._scripts.remove(script)
                return response
        return None

    def clear(self) -> None:
        self._scripts.clear()

    def pending(self) -> list[dict[str, Any]]:
        return [{"match": s.match, "remaining": len(s.responses)} for s in self._scripts]
