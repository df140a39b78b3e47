"""Client tool use: which of the offered tools the simulated model calls, and when it stops.

The policy is deterministic, so a test can predict every turn: with `tool_choice` auto (or
absent) the model calls tools for `turns` turns of a loop, then answers; with `any` it must
call a tool every turn, as the API enforces; `none` and forced tools are handled elsewhere.
Each tool turn calls up to `parallel` distinct tools (1 when `disable_parallel_tool_use`),
the ones whose name and description share most words with the question first, moving on to
the next ones in later turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from simulator.conversation import tool_turns
from simulator.ids import new_id
from simulator.schema_fill import MARK, fill, salient_words, seed_for


@dataclass(frozen=True)
class ToolPolicy:
    turns: int = 1
    """Tool-calling turns in one loop before the final answer (tool_choice auto)."""
    parallel: int = 2
    """Most distinct tools called in one turn; 1 never calls tools in parallel."""
    preamble: bool = True
    """Start a tool turn with a short text block, as Claude often does."""

    def updated(self, data: dict[str, Any]) -> ToolPolicy:
        """A copy with the given fields changed (the /_sim/tools control endpoint)."""
        policy = replace(
            self,
            turns=int(data.get("turns", self.turns)),
            parallel=int(data.get("parallel", self.parallel)),
            preamble=bool(data.get("preamble", self.preamble)),
        )
        if policy.turns < 0 or policy.parallel < 1:
            raise ValueError("turns must be >= 0 and parallel >= 1")
        return policy

    def report(self) -> dict[str, Any]:
        return {"turns": self.turns, "parallel": self.parallel, "preamble": self.preamble}


def custom_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Tools the client runs itself (server tools and Anthropic-defined ones are not called)."""
    return [
        tool
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
        and tool.get("type") in (None, "custom")
        and isinstance(tool.get("input_schema"), dict)
    ]


def planned_calls(
    body: dict[str, Any], policy: ToolPolicy, words: list[str]
) -> list[dict[str, Any]]:
    """The tools this turn calls, in order; empty when it is time for the final answer."""
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type", "auto")
    tools = custom_tools(body)
    if kind not in ("auto", "any") or not tools:
        return []
    done = tool_turns(body)
    if kind == "auto" and done >= policy.turns:
        return []
    width = 1 if choice.get("disable_parallel_tool_use") else policy.parallel
    ranked = sorted(
        range(len(tools)), key=lambda i: (-_relevance(tools[i], words), i)
    )  # stable: ties keep the order the tools were offered in
    count = min(width, len(tools))
    start = (done * count) % len(tools)
    return [tools[ranked[(start + k) % len(tools)]] for k in range(count)]


def _relevance(tool: dict[str, Any], words: list[str]) -> int:
    """How many of the tool's words share a 4-letter stem with a word of the question."""
    own = salient_words(f"{tool.get('name', '')} {tool.get('description', '')}".replace("_", " "))
    stems = {w[:4] for w in words if len(w) >= 4}
    return sum(1 for w in own if len(w) >= 4 and w[:4] in stems)


def generated_calls(
    body: dict[str, Any], tools: list[dict[str, Any]], words: list[str], prompt: str
) -> list[dict[str, Any]]:
    """tool_use blocks with inputs filled from each tool's input_schema and the question."""
    return [
        tool_use(
            str(tool["name"]),
            fill(tool["input_schema"], words=words, seed=seed_for(f"{prompt}\0{tool['name']}")),
        )
        for tool in tools
    ]


def tool_use(name: str, data: Any, tool_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": tool_id or new_id("toolu_sim"),
        "name": name,
        "input": data,
    }


def preamble(calls: list[dict[str, Any]]) -> str:
    names = ", ".join(str(call["name"]) for call in calls)
    return f"{MARK} I'll use {names} to answer this."


def output_text(content: list[dict[str, Any]]) -> str:
    """What a turn's output tokens are counted from: its texts and its tool calls."""
    parts = []
    for block in content:
        if block["type"] == "text":
            parts.append(str(block["text"]))
        else:
            parts.append(f"{block['name']} {json.dumps(block['input'])}")
    return "\n".join(parts)
