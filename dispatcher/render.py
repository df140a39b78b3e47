"""Turning outcomes and traces into terminal text and JSON documents."""

from __future__ import annotations

import textwrap
from typing import Any

from dispatcher.handle import TaskHandle, TaskOutcome
from messages.status import TaskStatus
from workers.state import StepRecord


def usd(micro: int) -> float:
    return micro / 1_000_000


def outcome_document(outcome: TaskOutcome, handle: TaskHandle) -> dict[str, Any]:
    """The `chorus run --json` document."""
    steps = handle.trace()
    in_review = outcome.status == TaskStatus.NEEDS_REVIEW
    doc: dict[str, Any] = {
        "task_id": outcome.task_id,
        "workflow": outcome.pattern,
        "pattern": outcome.pattern,
        "status": outcome.status,
        "result": outcome.result if outcome.ok else None,
        # A split (or an unsure judgement) waiting for a human is not an error.
        "review": outcome.result if in_review else None,
        "error": None if outcome.ok or in_review else outcome.result,
        "cost_usd": usd(outcome.cost_micro_usd),
        "cost_micro_usd": outcome.cost_micro_usd,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "cache_creation_input_tokens": outcome.cache_creation_input_tokens,
        "cache_read_input_tokens": outcome.cache_read_input_tokens,
        "retries": outcome.retries,
        "cost_by_agent": cost_by(steps, "agent"),
        "cost_by_model": cost_by(steps, "model"),
        "messages": [m.to_dict() for m in handle.messages()],
        "steps": [step_summary(s) for s in steps],
    }
    return doc


def totals(steps: list[StepRecord], key: str) -> dict[str, dict[str, int]]:
    """Steps, calls, tokens, retries and micro-dollars per agent or per model."""
    out: dict[str, dict[str, int]] = {}
    for step in steps:
        name = str(getattr(step, key) or "none")
        row = out.setdefault(name, dict.fromkeys(TOTAL_FIELDS, 0))
        row["steps"] += 1
        row["calls"] += step.attempts
        row["input_tokens"] += step.usage.get("input_tokens", 0)
        row["output_tokens"] += step.usage.get("output_tokens", 0)
        row["retries"] += step.retries
        row["cost_micro_usd"] += step.cost_micro_usd
    return out


TOTAL_FIELDS = ("steps", "calls", "input_tokens", "output_tokens", "retries", "cost_micro_usd")


def cost_by(steps: list[StepRecord], key: str) -> dict[str, float]:
    """Dollars per agent or per model, summed exactly in micro-dollars first."""
    return {name: usd(row["cost_micro_usd"]) for name, row in totals(steps, key).items()}


def step_summary(step: StepRecord) -> dict[str, Any]:
    return {
        "agent": step.agent,
        "status": step.status,
        "queue": step.queue,
        "worker": step.worker,
        "model": step.model,
        "attempts": step.attempts,
        "retries": step.retries,
        "latency_ms": step.latency_ms,
        "input_tokens": step.usage.get("input_tokens", 0),
        "output_tokens": step.usage.get("output_tokens", 0),
        "cache_creation_input_tokens": step.usage.get("cache_creation_input_tokens", 0),
        "cache_read_input_tokens": step.usage.get("cache_read_input_tokens", 0),
        "cost_usd": usd(step.cost_micro_usd),
        "output_message_id": step.message.get("message_id"),
        "turns": step.turns,
        "tool_calls": step.tool_calls,
    }


def describe_steps(steps: list[StepRecord]) -> list[str]:
    """Human lines: who handled each step, where, and what came out."""
    lines: list[str] = []
    for step in steps:
        where = f"queue {step.queue}  worker {step.worker}  model {step.model}"
        tokens = (
            f"{step.usage.get('input_tokens', 0)} in / {step.usage.get('output_tokens', 0)} out"
        )
        extra = f", {step.retries} retries" if step.retries else ""
        lines.append(f"  {step.agent:<11} {where}  ({tokens}, {step.latency_ms:.0f} ms{extra})")
        payload = step.message.get("payload", {})
        kind = step.message.get("message_type")
        if kind == "task":
            route = payload.get("context", {}).get("route", {})
            lines.append(
                f"    -> delegated to {route.get('agent')} (priority {route.get('priority')}): "
                f"{route.get('reasoning')}"
            )
        elif kind == "error":
            lines.append(f"    !! {payload.get('code')}: {payload.get('message')}")
        else:
            lines.extend(_payload_lines(payload))
    return lines


def _payload_lines(payload: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, value in payload.items():
        if isinstance(value, list):
            lines.append(f"    {key}:")
            lines.extend(_wrap(f"- {item}", "      ") for item in value)
        else:
            lines.append(_wrap(f"{key}: {value}", "    "))
    return lines


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent + "  ")
