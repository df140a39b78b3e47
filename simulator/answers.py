"""Building a Messages API answer: a forced tool, a turn of client tool calls, JSON-schema
output or text, then the content faults (prose instead of JSON, output cut at max_tokens) and
the usage the call is billed for."""

from __future__ import annotations

import json
from typing import Any

from simulator.cache import PromptCache
from simulator.conversation import latest_results, question_text, result_text, search_text
from simulator.ids import new_id
from simulator.schema_fill import MARK, fill, salient_words, seed_for
from simulator.scripts import ScriptBook
from simulator.tokens import count_input_tokens, count_output_tokens, prompt_text
from simulator.tools import (
    ToolPolicy,
    generated_calls,
    output_text,
    planned_calls,
    preamble,
    tool_use,
)


def respond(
    body: dict[str, Any],
    scripts: ScriptBook,
    cache: PromptCache,
    fault: str | None,
    policy: ToolPolicy | None = None,
) -> dict[str, Any]:
    """The answer to a request that passed `conversation.check_request`."""
    policy = policy or ToolPolicy()
    words = salient_words(question_text(body))
    scripted = scripts.take(search_text(body))
    choice = body.get("tool_choice") or {}
    output_format = (body.get("output_config") or {}).get("format") or {}
    if scripted is not None and "tool_calls" in scripted:
        calls = [
            tool_use(str(c["name"]), c.get("input", {}), c.get("id"))
            for c in scripted["tool_calls"]
        ]
        return _tool_turn(body, cache, calls, scripted.get("text"), fault)
    if fault == "prose" or (scripted is not None and "text" in scripted):
        prose = (
            scripted["text"]
            if scripted
            else f"{MARK} Sure! Here is my answer about {' '.join(words[:8])}."
        )
        return _message(body, cache, [_text(str(prose))], str(prose), "end_turn")

    prompt = prompt_text(body)
    seed = seed_for(prompt)
    if choice.get("type") == "tool":
        tool = next(t for t in body.get("tools") or [] if t.get("name") == choice["name"])
        schema = tool.get("input_schema") or {"type": "object"}
        data = scripted["tool_input"] if scripted else fill(schema, words=words, seed=seed)
        block = tool_use(str(choice["name"]), data)
        return _finish(body, cache, block, json.dumps(data), fault)
    if scripted is None:
        tools = planned_calls(body, policy, words)
        if tools:
            calls = generated_calls(body, tools, words, prompt)
            lead = preamble(calls) if policy.preamble else None
            return _tool_turn(body, cache, calls, lead, fault)

    results = latest_results(body)
    extra = salient_words(" ".join(result_text(r) for r in results))
    words = words + [w for w in extra if w not in words]
    if output_format.get("type") == "json_schema":
        schema = output_format.get("schema", {})
        data = scripted["tool_input"] if scripted else fill(schema, words=words, seed=seed)
        out_text = json.dumps(data)
    elif scripted is not None:
        out_text = json.dumps(scripted["tool_input"])
    else:
        out_text = f"{MARK} A response about {' '.join(words[:12]) or 'the request'}."
        if results:
            failed = sum(1 for r in results if r.get("is_error"))
            errors = f", {failed} of them errors" if failed else ""
            out_text += f" It draws on {len(results)} tool result(s){errors}."
    return _finish(body, cache, _text(out_text), out_text, fault)


def _finish(
    body: dict[str, Any],
    cache: PromptCache,
    block: dict[str, Any],
    out_text: str,
    fault: str | None,
) -> dict[str, Any]:
    max_tokens = int(body.get("max_tokens", 0))
    if fault == "truncate" or count_output_tokens(out_text) > max_tokens:
        return _truncated(body, cache, [block], out_text, max_tokens)
    stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
    return _message(body, cache, [block], out_text, stop)


def _tool_turn(
    body: dict[str, Any],
    cache: PromptCache,
    calls: list[dict[str, Any]],
    lead: str | None,
    fault: str | None,
) -> dict[str, Any]:
    """One assistant turn of tool_use blocks, optionally after a short text."""
    content = ([_text(lead)] if lead else []) + calls
    out_text = output_text(content)
    max_tokens = int(body.get("max_tokens", 0))
    if fault == "truncate" or count_output_tokens(out_text) > max_tokens:
        return _truncated(body, cache, content, out_text, max_tokens)
    return _message(body, cache, content, out_text, "tool_use")


def _truncated(
    body: dict[str, Any],
    cache: PromptCache,
    content: list[dict[str, Any]],
    out_text: str,
    max_tokens: int,
) -> dict[str, Any]:
    """What the API sends when output hits max_tokens: an incomplete first block."""
    cut = out_text[: max(1, min(len(out_text) // 2, max_tokens * 4))]
    first = content[0]
    # A tool call cut mid-way carries no usable input.
    if first["type"] == "tool_use":
        block = {**first, "input": {}}
    else:
        block = _text(str(first["text"])[: len(cut)])
    answer = _message(body, cache, [block], cut, "max_tokens")
    answer["usage"]["output_tokens"] = max(1, min(max_tokens, count_output_tokens(cut)))
    return answer


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _message(
    body: dict[str, Any],
    cache: PromptCache,
    content: list[dict[str, Any]],
    out_text: str,
    stop: str,
) -> dict[str, Any]:
    model = str(body["model"])
    cached = cache.use(model, body)
    return {
        "id": new_id("msg_sim"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": count_input_tokens(body) - cached.write_tokens - cached.read_tokens,
            "output_tokens": count_output_tokens(out_text),
            "cache_creation_input_tokens": cached.write_tokens,
            "cache_read_input_tokens": cached.read_tokens,
            "service_tier": "standard",
        },
    }
