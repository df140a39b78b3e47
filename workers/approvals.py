"""Tool calls that wait for a human: the step parks, a review opens, a decision resumes it.

A tool with `requires_approval=True` does not run until a reviewer approves the call. The
loop journals everything up to that turn and raises `StepParked`; the agent's Celery task
stores the pending calls with the signature that resumes it, opens the review (park_step.lua,
one atomic call) and ends without a result, so no worker slot waits for the human. The
decision (decide_tool.lua, only one ever wins) writes `decision:<tool_use_id>` into the step's
journal and republishes the step; the redelivered step replays its journal, runs the approved
calls or answers the rejected ones with the reviewer's note as the tool's error, and goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from messages.errors import ChorusError
from workers import keys, scripts
from workers.audit_events import AuditStream, utc_iso
from workers.reviews import REVIEW_TTL
from workers.tool_exec import ToolCall, ToolOutcome

_PARK = scripts.load("park_step")
_DECIDE = scripts.load("decide_tool")

SEPARATOR = "/"
"""Between the task id and the message id of a review id (ids never contain it)."""


class StepParked(BaseException):
    """The step waits for a reviewer: not an error, so the runner's catch-all lets it pass.

    The agent's task catches it (workers/resume.py `park_task`) and ends without a result.
    """

    def __init__(
        self, *, agent: str, task_id: str, message_id: str, turn: int, calls: tuple[ToolCall, ...]
    ) -> None:
        names = ", ".join(call.name for call in calls)
        super().__init__(f"task {task_id}: agent {agent!r} waits for approval of {names}")
        self.agent = agent
        self.task_id = task_id
        self.message_id = message_id
        self.turn = turn
        self.calls = calls

    @property
    def review_id(self) -> str:
        return review_id(self.task_id, self.message_id)


def review_id(task_id: str, message_id: str) -> str:
    return f"{task_id}{SEPARATOR}{message_id}"


def decided_outcome(call: ToolCall, decision: Any) -> ToolOutcome:
    """A rejected call's result: the reviewer's note, as the tool's error."""
    why = f": {decision.note}" if decision.note else ""
    error = (
        f"A reviewer ({decision.reviewer or 'unknown'}) rejected this call of {call.name!r}{why}"
    )
    return ToolOutcome(call.id, call.name, call.input, None, error, 0.0)


@dataclass(frozen=True)
class PendingApproval:
    """A parked step as its review shows it."""

    review_id: str
    task_id: str
    message_id: str
    agent: str
    turn: int
    calls: list[dict[str, Any]]
    """{id, name, input} of each call waiting for the decision."""
    parked_at: str
    since: float = 0.0
    """When it started waiting (seconds since the epoch)."""
    resume: dict[str, Any] | None = None
    """The Celery signature that resumes the step (its own task, same id, chain and chord)."""


class Approvals:
    """Parks steps, lists and decides their reviews; safe to share between threads."""

    def __init__(self, client: redis.Redis, audit: AuditStream, ttl: int) -> None:
        self._redis = client
        self._audit = audit
        self._ttl = ttl

    def park(self, parked: StepParked, resume: dict[str, Any] | None) -> bool:
        """Store the pending calls and open the review; False when it was parked already."""
        now = utc_iso()
        entry: dict[str, Any] = {
            "review_id": parked.review_id,
            "task_id": parked.task_id,
            "message_id": parked.message_id,
            "agent": parked.agent,
            "turn": parked.turn,
            "calls": [{"id": c.id, "name": c.name, "input": c.input} for c in parked.calls],
            "parked_at": now,
            "resume": resume,
        }
        done = _PARK(
            self._redis,
            keys={
                "journal": keys.journal(parked.task_id, parked.message_id),
                "task": keys.task(parked.task_id),
                "board": keys.board(parked.task_id),
                "trace": keys.trace(parked.task_id),
                "reviews": keys.TOOL_REVIEWS,
                "audit": keys.AUDIT,
            },
            args={
                "park": json.dumps(entry, separators=(",", ":")),
                "review_id": parked.review_id,
                "task_id": parked.task_id,
                "agent": parked.agent,
                "score": time.time(),
                "review_ttl": REVIEW_TTL,
                "now": now,
                **self._audit.args(),
            },
        )
        return bool(done)

    def pending(self) -> list[PendingApproval]:
        """Parked steps, oldest first."""
        entries = cast(
            list[tuple[bytes, float]],
            self._redis.zrange(keys.TOOL_REVIEWS, 0, -1, withscores=True),
        )
        found = [self.get(member.decode(), since=score) for member, score in entries]
        return [item for item in found if item is not None]

    def get(self, rid: str, *, since: float = 0.0) -> PendingApproval | None:
        task_id, _, message_id = rid.partition(SEPARATOR)
        raw = cast(bytes | None, self._redis.hget(keys.journal(task_id, message_id), "park"))
        if raw is None:
            return None
        return _pending(json.loads(raw), since)

    def find(self, given: str) -> str | None:
        """The review id for `given`: a review id, or a task id with one parked step."""
        if SEPARATOR in given:
            return given
        members = cast(list[bytes], self._redis.zrange(keys.TOOL_REVIEWS, 0, -1))
        matches = [m.decode() for m in members if m.decode().startswith(given + SEPARATOR)]
        if len(matches) > 1:
            raise ChorusError(
                f"task {given} has {len(matches)} steps waiting for approval; "
                f"name one: {', '.join(matches)}"
            )
        return matches[0] if matches else None

    def decide(
        self, rid: str, *, approve: bool, note: str, reviewer: str
    ) -> PendingApproval | None:
        """Record the decision for every call the step waits on; None when it is not waiting."""
        task_id, _, message_id = rid.partition(SEPARATOR)
        now = utc_iso()
        decision = {"approved": approve, "note": note, "reviewer": reviewer, "at": now}
        raw = _DECIDE(
            self._redis,
            keys={
                "journal": keys.journal(task_id, message_id),
                "task": keys.task(task_id),
                "reviews": keys.TOOL_REVIEWS,
                "audit": keys.AUDIT,
            },
            args={
                "review_id": rid,
                "task_id": task_id,
                "decision": json.dumps(decision, separators=(",", ":")),
                "ttl": self._ttl,
                "now": now,
                **self._audit.args(),
            },
        )
        return None if raw is None else _pending(json.loads(cast(bytes, raw)), 0.0)


def _pending(entry: dict[str, Any], since: float) -> PendingApproval:
    fields: dict[str, Any] = {
        name: entry.get(name) for name in PendingApproval.__dataclass_fields__
    }
    fields["since"] = since
    return PendingApproval(**fields)
