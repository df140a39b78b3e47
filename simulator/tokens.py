"""A deterministic token estimate: about four characters a token, plus small overheads.

/v1/messages usage, /v1/messages/count_tokens and the prompt cache all measure the prompt through
`segments`, so they agree exactly.
"""

from __future__ import annotations

import json
import math
from typing import Any

BASE_OVERHEAD = 8
PER_MESSAGE = 4

Segment = tuple[str, dict[str, Any] | None]
"""A piece of the prompt and the cache_control that ends there, if any."""


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return str(block)
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        return json.dumps(block.get("input", {}), sort_keys=True)
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            return "\n".join(_block_text(b) for b in content)
        return str(content)
    return json.dumps(block, sort_keys=True)


def _control(block: Any) -> dict[str, Any] | None:
    control = block.get("cache_control") if isinstance(block, dict) else None
    return control if isinstance(control, dict) else None


def segments(body: dict[str, Any]) -> list[Segment]:
    """The prompt in the API's cache order: tools, system, output schema, messages."""
    out: list[Segment] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            text = "\n".join(
                [
                    str(tool.get("name", "")),
                    str(tool.get("description", "")),
                    json.dumps(tool.get("input_schema", {}), sort_keys=True),
                ]
            )
            out.append((text, _control(tool)))
    system = body.get("system")
    if isinstance(system, str):
        out.append((system, None))
    elif isinstance(system, list):
        out.extend((_block_text(block), _control(block)) for block in system)
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format:
        out.append((json.dumps(output_format.get("schema", {}), sort_keys=True), None))
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            out.extend((_block_text(block), _control(block)) for block in content)
        else:
            out.append(("" if content is None else str(content), None))
    return out


def text_tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_text(body: dict[str, Any]) -> str:
    return "\n".join(text for text, _ in segments(body))


def count_input_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    chars = sum(len(text) for text, _ in segments(body))
    return BASE_OVERHEAD + PER_MESSAGE * len(messages) + text_tokens(chars)


def count_output_tokens(text: str) -> int:
    return max(1, text_tokens(len(text)) + 2)
