"""Building a Messages API answer: forced tool, JSON-schema output or text, then the content
faults (prose instead of JSON, output cut at max_tokens) and the usage the call is billed for."""

from __future__ import annotations

import json
import uuid
from typing import Any

from simulator.cache import PromptCache
from simulator.errors import ApiError
from simulator.schema_fill import MARK, fill, salient_words, seed_for
from simulator.scripts import ScriptBook
from simulator.tokens import count_input_tokens, count_output_tokens, prompt_text


def request_text(body: dict[str, Any]) -> str:
    """The words the answer draws on: the first text block of the last user message."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [b.get("text") for b in content if isinstance(b, dict)]
                return next((str(t) for t in texts if t), "")
    return ""


def respond(
    body: dict[str, Any], scripts: ScriptBook, cache: PromptCache, fault: str | None
) -> dict[str, Any]:
    text = request_text(body)
    words = salient_words(text)
    scripted = scripts.take(text)
    tools = {t.get("name"): t for t in body.get("tools") or [] if isinstance(t, dict)}
    choice = body.get("tool_choice") or {}
    output_format = (body.get("output_config") or {}).get("format") or {}
    if choice.get("type") == "tool" and choice.get("name") not in tools:
        raise ApiError(
            400, "invalid_request_error", f"tool_choice names unknown tool {choice.get('name')!r}"
        )
    if fault == "prose" or (scripted is not None and "text" in scripted):
        prose = (
            scripted["text"]
            if scripted
            else f"{MARK} Sure! Here is my answer about {' '.join(words[:8])}."
        )
        return _message(body, cache, [_text(str(prose))], str(prose), "end_turn")

    seed = seed_for(prompt_text(body))
    if choice.get("type") == "tool":
        schema = tools[choice["name"]].get("input_schema") or {"type": "object"}
        data = scripted["tool_input"] if scripted else fill(schema, words=words, seed=seed)
        out_text = json.dumps(data)
        block = {
            "type": "tool_use",
            "id": f"toolu_sim_{uuid.uuid4().hex[:24]}",
            "name": choice["name"],
            "input": data,
        }
    elif output_format.get("type") == "json_schema":
        schema = output_format.get("schema", {})
        data = scripted["tool_input"] if scripted else fill(schema, words=words, seed=seed)
        out_text = json.dumps(data)
        block = _text(out_text)
    else:
        out_text = f"{MARK} A response about {' '.join(words[:12]) or 'the request'}."
        block = _text(out_text)

    max_tokens = int(body.get("max_tokens", 0))
    if fault == "truncate" or count_output_tokens(out_text) > max_tokens:
        return _truncated(body, cache, block, out_text, max_tokens)
    stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
    return _message(body, cache, [block], out_text, stop)


def _truncated(
    body: dict[str, Any], cache: PromptCache, block: dict[str, Any], out_text: str, max_tokens: int
) -> dict[str, Any]:
    """What the API sends when output hits max_tokens: an incomplete answer."""
    cut = out_text[: max(1, min(len(out_text) // 2, max_tokens * 4))]
    # A tool call cut mid-way carries no usable input.
    block = {**block, "input": {}} if block["type"] == "tool_use" else _text(cut)
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
        "id": f"msg_sim_{uuid.uuid4().hex[:24]}",
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
        },
    }
