"""A deterministic token estimate: about four characters a token, plus small overheads.

/v1/messages usage and /v1/messages/count_tokens use the same function, so they agree exactly.
"""

from __future__ import annotations

import json
import math
from typing import Any

BASE_OVERHEAD = 8
PER_MESSAGE = 4


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, dict):
                parts.append(str(block))
            elif block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                parts.append(json.dumps(block.get("input", {}), sort_keys=True))
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content", "")))
            else:
                parts.append(json.dumps(block, sort_keys=True))
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, sort_keys=True)


def prompt_text(body: dict[str, Any]) -> str:
    """Everything the model would read, as one string."""
    parts = [_text_of(body.get("system"))]
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            parts.append(str(tool.get("name", "")))
            parts.append(str(tool.get("description", "")))
            parts.append(json.dumps(tool.get("input_schema", {}), sort_keys=True))
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format:
        parts.append(json.dumps(output_format.get("schema", {}), sort_keys=True))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(_text_of(message.get("content")))
    return "\n".join(parts)


def count_input_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    text = prompt_text(body)
    return BASE_OVERHEAD + PER_MESSAGE * len(messages) + math.ceil(len(text) / 4)


def count_output_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4) + 2)
