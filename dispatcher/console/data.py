"""What the console shows and does, as plain data: the same calls `chorus trace`, `chorus review`
and `chorus dlq` make, so the console and the terminal can never disagree.

Every method blocks (Redis, SQL); the handlers run them on a thread pool, off the event loop.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from dispatcher.console.task_index import TaskFilter, TaskIndex, TaskRow
from dispatcher.deadletters import DeadLetter, DeadLetters
from dispatcher.dispatcher import Dispatcher
from dispatcher.render import totals
from dispatcher.review import TOOL, ReviewQueue
from dispatcher.trace import Node, build_tree, node_document
from messages import AgentMessage, ChorusError
from messages.status import FINISHED, TaskStatus
from workers import keys
from workers.approvals import SEPARATOR
from workers.state import StepRecord

LIVE_FIELDS = ("status", "steps", "updated_at", "cost_micro_usd")


class DecisionRefused(ChorusError):
    """A review decision that cannot be taken: decided already, not waiting, or no note."""

    def __init__(self, message: str, *, conflict: bool) -> None:
        super().__init__(message)
        self.conflict = conflict
        """True when the task was decided already or is not waiting (HTTP 409), else 400."""


@dataclass(frozen=True)
class PendingItem:
    """One entry of the review queue, with what the reviewer needs to decide."""

    review_id: str
    """What the decision names: the task id, or `task_id/message_id` for a tool review."""
    task_id: str
    since: str
    summary: str
    kind: str
    """`consensus` (a split or unsure judge) or `tool` (a step parked before a tool call)."""
    steps: list[dict[str, str]]
    """Each step's agent, status and one-line summary (the analysts' verdicts, the judge's)."""
    calls: list[dict[str, str]]
    """A tool review's pending calls: name and input (JSON); empty for a consensus."""
    agent: str = ""
    """The parked step's agent, for a tool review."""


class ConsoleData:
    """The console's reads and actions over one Dispatcher (its Redis and audit trail)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._redis: redis.Redis = dispatcher.app.runtime().redis
        self.index = TaskIndex(self._redis, lambda: dispatcher.archive)

    # -- tasks --------------------------------------------------------------------------------

    def tasks(self, wanted: TaskFilter, *, limit: int = 200) -> list[TaskRow]:
        return self.index.rows(wanted, limit=limit)

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The task page's document: `chorus trace --json` plus each step in full, flattened in
        tree order (`rows`) so a template can draw it without recursion; None when unknown."""
        handle = self.dispatcher.handle(task_id)
        info = handle.status()
        if not info:
            return None
        steps = handle.trace()
        messages = handle.messages()
        roots = build_tree(messages, steps)
        rows: list[dict[str, Any]] = []
        for root in roots:
            _flatten(root, 0, rows)
        return {
            "task_id": task_id,
            "pattern": info.get("pattern"),
            "workflow": info.get("workflow") or info.get("pattern"),
            "status": info.get("status"),
            "info": {k: v for k, v in info.items() if not k.startswith(("queued:", "running:"))},
            "in_flight": _in_flight(info),
            "finished": _finished(info),
            "version": _version(info),
            "cost_micro_usd": sum(s.cost_micro_usd for s in steps),
            "tree": [node_document(n) for n in roots],
            "rows": rows,
            "by_agent": totals(steps, "agent"),
            "by_model": totals(steps, "model"),
        }

    def live(self, task_id: str) -> dict[str, Any] | None:
        """Status and a version that changes with every step: what the task page polls."""
        key = keys.task(task_id)
        names = [n.decode() for n in cast(list[bytes], self._redis.hkeys(key))]
        if not names:
            info = self.dispatcher.handle(task_id).status()  # expired: the audit trail's copy
            if not info:
                return None
        else:
            counters = [n for n in names if n.startswith(("queued:", "running:"))]
            wanted = [*LIVE_FIELDS, *counters]
            values = cast(list[bytes | None], self._redis.hmget(key, wanted))
            info = {k: v.decode() for k, v in zip(wanted, values, strict=True) if v is not None}
        return {
            "task_id": task_id,
            "status": info.get("status", "unknown"),
            "steps": int(info.get("steps", 0) or 0),
            "cost_micro_usd": int(info.get("cost_micro_usd", 0) or 0),
            "finished": _finished(info),
            "version": _version(info),
        }

    # -- reviews ------------------------------------------------------------------------------

    @property
    def queue(self) -> ReviewQueue:
        """The same queue `chorus review` uses; a tool review resumes on this app."""
        return ReviewQueue(self.dispatcher.state, self.dispatcher.app)

    def reviews(self) -> list[PendingItem]:
        queue = self.queue
        items = []
        for pending in queue.list():
            records = self.dispatcher.handle(pending.task_id).trace()
            calls: list[dict[str, str]] = []
            agent = ""
            if pending.kind == TOOL:
                with contextlib.suppress(ChorusError):  # decided meanwhile: no calls to show
                    shown = queue.show(pending.review_id)
                    agent = str(shown.get("agent", ""))
                    calls = [
                        {"name": str(c.get("name")), "input": _json(c.get("input"))}
                        for c in shown.get("calls", [])
                    ]
            items.append(
                PendingItem(
                    review_id=pending.review_id or pending.task_id,
                    task_id=pending.task_id,
                    since=pending.since,
                    summary=pending.summary,
                    kind=pending.kind,
                    steps=[
                        {"agent": s.agent, "status": s.status, "summary": s.summary}
                        for s in records
                    ],
                    calls=calls,
                    agent=agent,
                )
            )
        return items

    def decide(self, review_id: str, *, approve: bool, note: str, reviewer: str) -> None:
        """Approve or reject as `reviewer`; a review is decided once, by whoever comes first."""
        if not approve and not note.strip():
            raise DecisionRefused("a rejection needs a note saying why", conflict=False)
        try:
            self.queue.decide(review_id, approve=approve, note=note, reviewer=reviewer)
        except ChorusError as exc:
            task_id = review_id.split(SEPARATOR, 1)[0]
            info = self.dispatcher.handle(task_id).status()
            if SEPARATOR not in review_id and info.get("review_decision"):
                who = info.get("reviewer", "someone")
                who = "you" if who == reviewer else who
                raise DecisionRefused(
                    f"task {task_id} was already {info['review_decision']} by {who} at "
                    f"{info.get('reviewed_at', '?')}: a review is decided once, and that "
                    "decision stands",
                    conflict=True,
                ) from None
            raise DecisionRefused(
                f"{exc}: a review is decided once, and that decision stands", conflict=True
            ) from None

    # -- dead letters -------------------------------------------------------------------------

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        return DeadLetters(self.dispatcher).list(limit=limit)

    def retry(self, letter_id: str) -> AgentMessage:
        return DeadLetters(self.dispatcher).retry(letter_id)


def _version(info: dict[str, Any]) -> str:
    """Changes whenever a step is recorded or the status changes; the page compares it."""
    return "|".join(str(info.get(name, "")) for name in LIVE_FIELDS)


def _in_flight(info: dict[str, Any]) -> int:
    return sum(int(v or 0) for k, v in info.items() if k.startswith(("queued:", "running:")))


def _finished(info: dict[str, Any]) -> bool:
    """Nothing more will change: a final status, no step in flight, and no review pending
    (a decision, taken anywhere, changes the page too)."""
    status = info.get("status")
    return status in FINISHED and status != TaskStatus.NEEDS_REVIEW and not _in_flight(info)


def _flatten(node: Node, depth: int, rows: list[dict[str, Any]]) -> None:
    message = node.message
    row: dict[str, Any] = {
        "depth": depth,
        "message_id": message.message_id,
        "sender": message.sender,
        "recipient": message.recipient,
        "message_type": message.message_type.value,
        "payload": json.dumps(message.payload, indent=2, ensure_ascii=False),
        "step": None if node.step is None else step_detail(node.step),
    }
    rows.append(row)
    for child in node.children:
        _flatten(child, depth + 1, rows)


def step_detail(step: StepRecord) -> dict[str, Any]:
    """Everything the task page shows of one step, its tool loop's turns and calls included."""
    return {
        "agent": step.agent,
        "status": step.status,
        "model": step.model,
        "queue": step.queue,
        "worker": step.worker,
        "latency_ms": step.latency_ms,
        "input_tokens": step.usage.get("input_tokens", 0),
        "output_tokens": step.usage.get("output_tokens", 0),
        "cache_read_input_tokens": step.usage.get("cache_read_input_tokens", 0),
        "cache_creation_input_tokens": step.usage.get("cache_creation_input_tokens", 0),
        "cost_micro_usd": step.cost_micro_usd,
        "attempts": step.attempts,
        "retries": step.retries,
        "retry_log": step.retry_log,
        "summary": step.summary,
        "raw_output": step.raw_output,
        "turns": list(getattr(step, "turns", None) or []),
        "tool_calls": [_tool_call(call) for call in getattr(step, "tool_calls", None) or []],
        "branches": step.branches,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
    }


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call as the page shows it: input and output as text, the error if it failed."""
    error = call.get("error")
    return {
        **call,
        "input_text": _json(call.get("input")),
        "output_text": "" if error is not None else _json(call.get("output")),
        "error_text": "" if error is None else str(error),
    }


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
