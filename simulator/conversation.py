"""Reading a request's conversation: its shape checks, the question it asks, the text scripts
and scoped faults match on, and the tool loop it is in.

The tool_use / tool_result rules and their messages follow the real API's 400s, so a client's
tool loop that the simulator accepts is one the API accepts too.
"""

from __future__ import annotations

import json
from typing import Any

from simulator.errors import ApiError

TOOL_CHOICES = ("auto", "any", "tool", "none")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def blocks(message: Any) -> list[dict[str, Any]]:
    """A message's content as blocks (a string content is one text block)."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def result_text(block: dict[str, Any]) -> str:
    """The text of a tool_result: its string content, or its text blocks joined."""
    content = block.get("content", "")
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


def check_request(body: dict[str, Any], *, needs_max_tokens: bool) -> None:
    """The checks /v1/messages, count_tokens and each batched request share."""
    required = ["model", "messages"] + (["max_tokens"] if needs_max_tokens else [])
    for name in required:
        if name not in body:
            raise _invalid(f"{name}: Field required")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    if body.get("stream"):
        raise _invalid("streaming is not supported by the simulator")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    _check_tools(body)
    check_tool_pairing(messages)


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{i}.name: Field required")
        if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"), dict):
            raise _invalid(f"tools.{i}.custom.input_schema: Field required")
        if tool["name"] in names:
            raise _invalid("tools: Tool names must be unique.")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICES:
        raise _invalid(f"tool_choice.type: Input should be one of {', '.join(TOOL_CHOICES)}")
    if choice["type"] == "tool" and choice.get("name") not in names:
        raise _invalid(f"tool_choice names unknown tool {choice.get('name')!r}")


def check_tool_pairing(messages: list[Any]) -> None:
    """Every tool_use of an assistant turn is answered by a tool_result at the start of the
    next user message, and every tool_result answers a tool_use of the message before it."""
    previous: list[str] = []
    for i, message in enumerate(messages):
        content = blocks(message)
        if message.get("role") == "user":
            for j, block in enumerate(content):
                if block.get("type") != "tool_result":
                    continue
                _check_result_block(block, f"messages.{i}.content.{j}")
                if block.get("tool_use_id") not in previous:
                    raise _invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous message."
                    )
            previous = []
            continue
        previous = [str(b.get("id")) for b in content if b.get("type") == "tool_use"]
        if not previous:
            continue
        after = messages[i + 1] if i + 1 < len(messages) else None
        following = blocks(after) if after is not None and after.get("role") == "user" else []
        answered: set[object] = set()
        for block in following:  # only the leading run of tool_result blocks counts
            if block.get("type") != "tool_result":
                break
            answered.add(block.get("tool_use_id"))
        missing = [tool_id for tool_id in previous if tool_id not in answered]
        if missing:
            raise _invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )


def _check_result_block(block: dict[str, Any], where: str) -> None:
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise _invalid(f"{where}.is_error: Input should be a valid boolean")
    content = block.get("content", "")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(f"{where}.content: Input should be a valid string or a list of blocks")
    for k, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _invalid(f"{where}.content.{k}.type: Field required")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _invalid(f"{where}.content.{k}.text: Field required")


def question_text(body: dict[str, Any]) -> str:
    """The words an answer draws on: the first text of the last user message that has any
    (in a tool loop, the question the tool results serve)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            texts = [b.get("text") for b in blocks(message) if b.get("type") == "text"]
            first = next((str(t) for t in texts if t), None)
            if first is not None:
                return first
    return ""


def search_text(body: dict[str, Any]) -> str:
    """Everything a script or a scoped fault may match: the system prompt and every text of
    every message, tool results included (so one marker follows a whole tool loop)."""
    parts: list[str] = []
    system = body.get("system")
    if isinstance(system, str):
        parts.append(system)
    elif isinstance(system, list):
        parts.extend(str(b.get("text", "")) for b in system if isinstance(b, dict))
    for message in body.get("messages") or []:
        for block in blocks(message):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(result_text(block))
            elif block.get("type") == "tool_use":
                parts.append(json.dumps(block.get("input", {}), sort_keys=True))
    return "\n".join(parts)


def tool_turns(body: dict[str, Any]) -> int:
    """Assistant tool-calling turns since the user last asked something (not a tool result)."""
    turns = 0
    for message in body.get("messages") or []:
        content = blocks(message)
        if message.get("role") == "user":
            if not any(b.get("type") == "tool_result" for b in content):
                turns = 0
        elif any(b.get("type") == "tool_use" for b in content):
            turns += 1
    return turns


def latest_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the last message, when it is a user message."""
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return []
    return [b for b in blocks(messages[-1]) if b.get("type") == "tool_result"]
