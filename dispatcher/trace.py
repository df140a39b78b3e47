"""`chorus trace`: a task's messages as a tree (by parent_message_id), each answer with the step
that produced it, plus totals per agent and per model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dispatcher.handle import TaskHandle
from dispatcher.render import totals, usd
from messages import AgentMessage
from workers.state import StepRecord


@dataclass
class Node:
    message: AgentMessage
    step: StepRecord | None
    """The step whose answer this message is; None for messages a producer sent."""
    children: list[Node] = field(default_factory=list)


def build_tree(messages: list[AgentMessage], steps: list[StepRecord]) -> list[Node]:
    by_output = {str(s.message.get("message_id")): s for s in steps}
    nodes = {m.message_id: Node(m, by_output.get(m.message_id)) for m in messages}
    roots: list[Node] = []
    for node in nodes.values():  # messages come parents-first, siblings by time
        parent = nodes.get(node.message.parent_message_id or "")
        (parent.children if parent else roots).append(node)
    return roots


def node_document(node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "message_id": node.message.message_id,
        "sender": node.message.sender,
        "recipient": node.message.recipient,
        "message_type": node.message.message_type.value,
        "depth": node.message.depth,
    }
    if node.step is not None:
        step = node.step
        doc["step"] = {
            "agent": step.agent,
            "status": step.status,
            "queue": step.queue,
            "worker": step.worker,
            "model": step.model,
            "latency_ms": step.latency_ms,
            "input_tokens": step.usage.get("input_tokens", 0),
            "output_tokens": step.usage.get("output_tokens", 0),
            "retries": step.retries,
            "cost_micro_usd": step.cost_micro_usd,
            "turns": step.turns,
            "tool_calls": step.tool_calls,
            "batched_calls": step.batched_calls,
        }
    doc["children"] = [node_document(child) for child in node.children]
    return doc


def trace_document(handle: TaskHandle) -> dict[str, Any]:
    steps = handle.trace()
    info = handle.status()
    return {
        "task_id": handle.task_id,
        "pattern": info.get("pattern"),
        "status": info.get("status"),
        "cost_micro_usd": sum(s.cost_micro_usd for s in steps),
        "tree": [node_document(n) for n in build_tree(handle.messages(), steps)],
        "by_agent": totals(steps, "agent"),
        "by_model": totals(steps, "model"),
    }


def render(document: dict[str, Any]) -> list[str]:
    lines = [
        f"task {document['task_id']}  {document['pattern']}  {document['status']}  "
        f"total ${usd(document['cost_micro_usd']):.6f}"
    ]

    def walk(node: dict[str, Any], prefix: str, last: bool) -> None:
        branch = "└─ " if last else "├─ "
        text = f"{node['sender']} → {node['recipient']}  {node['message_type']}"
        step = node.get("step")
        if step:
            text += (
                f"  [{step['agent']} {step['status']} on {step['queue']} @ {step['worker']}, "
                f"{step['model']}, {step['latency_ms']:.0f} ms, "
                f"{step['input_tokens']}+{step['output_tokens']} tok, "
                f"{step['retries']} retries, ${usd(step['cost_micro_usd']):.6f}"
                f"{batch_mark(step)}]"
            )
        lines.append(prefix + branch + text)
        children = node["children"]
        if step:
            inner = prefix + ("   " if last else "│  ") + ("│  " if children else "   ")
            lines.extend(inner + line for line in tool_lines(step) + batch_lines(step))
        for index, child in enumerate(children):
            walk(child, prefix + ("   " if last else "│  "), index == len(children) - 1)

    roots = document["tree"]
    for index, root in enumerate(roots):
        walk(root, "", index == len(roots) - 1)
    for title, key in (("per agent", "by_agent"), ("per model", "by_model")):
        lines.append(title + ":")
        for name, row in document[key].items():
            lines.append(
                f"  {name:<20} {row['steps']} steps, {row['calls']} calls, "
                f"{row['input_tokens']}+{row['output_tokens']} tok, {row['retries']} retries, "
                f"${usd(row['cost_micro_usd']):.6f}"
            )
    return lines


TOOL_TEXT_LIMIT = 80
"""Characters of a tool call's input or output shown on its `chorus trace` line."""


def tool_lines(step: dict[str, Any]) -> list[str]:
    """A tool loop under its step: each turn's cost, and the calls made in it."""
    calls: dict[int, list[dict[str, Any]]] = {}
    for call in step.get("tool_calls") or []:
        calls.setdefault(int(call["turn"]), []).append(call)
    lines = []
    for turn in step.get("turns") or []:
        number = int(turn["turn"])
        usage = turn["usage"]
        again = ", replayed" if turn.get("replayed") else ""
        lines.append(
            f"turn {number}: {turn['stop_reason']}, {usage['input_tokens']}+"
            f"{usage['output_tokens']} tok, ${usd(turn['cost_micro_usd']):.6f}{again}"
        )
        for call in calls.get(number, []):
            shown = _clip(json.dumps(call["input"], sort_keys=True))
            if call.get("error") is not None:
                result = f"error: {_clip(str(call['error']))}"
            else:
                result = f"→ {_clip(str(call['output']))}"
            lines.append(f"  tool {call['name']}({shown}) {result}  {call['duration_ms']:.0f} ms")
    return lines


def batch_mark(step: dict[str, Any]) -> str:
    """`, batched` on a step whose calls went through the Message Batches API (half price)."""
    return ", batched" if step.get("batched_calls") else ""


def batch_lines(step: dict[str, Any]) -> list[str]:
    """Each batched call of a step: its attempt, batch and custom_id."""
    return [
        f"batched call {call['attempt']}: {call['batch_id']} {call['custom_id']}"
        for call in step.get("batched_calls") or []
    ]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TOOL_TEXT_LIMIT else text[: TOOL_TEXT_LIMIT - 1] + "…"
