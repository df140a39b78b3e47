"""The human review queue: consensus runs the judge could not settle, and tool calls that need
approval, wait here for a person.

Each pending review has a `kind`: `consensus` (a finished task in needs_review; the decision
ends it done or rejected) or `tool` (a step parked before a tool call; the decision resumes the
step on any worker, and a rejection reaches the model as the tool's error). Both are listed,
shown and decided the same way, by task id (or, for a task with several parked steps, by the
review id `task_id/message_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from messages import ChorusError
from workers.approvals import SEPARATOR, Approvals, PendingApproval
from workers.resume import resume
from workers.reviews import REVIEW_TTL
from workers.state import TaskState

CONSENSUS = "consensus"
TOOL = "tool"


@dataclass(frozen=True)
class PendingReview:
    task_id: str
    since: str
    summary: str
    kind: str = CONSENSUS
    """`consensus` or `tool`."""
    review_id: str = ""
    """What approve/reject take: the task id, or `task_id/message_id` for a tool review."""


class ReviewQueue:
    """`app` publishes the resumed step of a tool review (default: Celery's current app)."""

    def __init__(self, state: TaskState, app: Celery | None = None) -> None:
        self._state = state
        self._app = app
        self._approvals = Approvals(state.redis, state.audit, REVIEW_TTL)

    def list(self) -> list[PendingReview]:
        """Every pending review, oldest first."""
        pending = []
        for task_id, score in self._state.pending_reviews():
            since = _iso(score)
            pending.append(
                PendingReview(task_id, since, self._summary(task_id), CONSENSUS, task_id)
            )
        for item in self._approvals.pending():
            pending.append(
                PendingReview(
                    item.task_id, _iso(item.since), _tool_summary(item), TOOL, item.review_id
                )
            )
        return sorted(pending, key=lambda review: review.since)

    def show(self, task_id: str) -> dict[str, Any]:
        """The task's status and every step's answer (and a tool review's pending calls)."""
        tool = self._tool_review(task_id)
        if tool is not None:
            task_id = tool.task_id
        info = self._state.task_info(task_id)
        if not info:
            raise ChorusError(f"no task {task_id} (unknown, or its state expired)")
        info.pop("root_message", None)
        steps = [
            {"agent": s.agent, "status": s.status, "answer": s.message.get("payload")}
            for s in self._state.steps(task_id)
        ]
        shown: dict[str, Any] = {"task_id": task_id, "kind": CONSENSUS, **info, "steps": steps}
        if tool is not None:
            shown.update(
                kind=TOOL,
                review_id=tool.review_id,
                agent=tool.agent,
                turn=tool.turn,
                parked_at=tool.parked_at,
                calls=tool.calls,
            )
        return shown

    def decide(self, task_id: str, *, approve: bool, note: str = "", reviewer: str) -> None:
        if not approve and not note:
            raise ChorusError("a rejection needs a note saying why")
        tool = self._tool_review(task_id)
        if tool is not None:
            decided = self._approvals.decide(
                tool.review_id, approve=approve, note=note, reviewer=reviewer
            )
            if decided is None:
                raise ChorusError(f"review {tool.review_id} was decided already")
            resume(self._app or _current_app(), decided)
            return
        if not self._state.decide_review(task_id, approve=approve, note=note, reviewer=reviewer):
            status = self._state.task_info(task_id).get("status", "unknown")
            raise ChorusError(f"task {task_id} is not waiting for review (status: {status})")

    def approve(self, task_id: str, *, note: str = "", reviewer: str = "unknown") -> None:
        self.decide(task_id, approve=True, note=note, reviewer=reviewer)

    def reject(self, task_id: str, *, note: str, reviewer: str = "unknown") -> None:
        self.decide(task_id, approve=False, note=note, reviewer=reviewer)

    def _tool_review(self, given: str) -> PendingApproval | None:
        """The parked step `given` names (a review id, or a task id with one parked step)."""
        rid = self._approvals.find(given)
        if rid is None:
            return None
        found = self._approvals.get(rid)
        if found is None and SEPARATOR in given:
            raise ChorusError(f"review {given} is not waiting (decided already, or unknown)")
        return found

    def _summary(self, task_id: str) -> str:
        steps = self._state.steps(task_id)
        if not steps:
            return ""
        payload = steps[-1].message.get("payload", {})
        return (
            f"consensus {payload.get('consensus')} (confidence {payload.get('confidence')}): "
            f"{str(payload.get('recommendation', ''))[:80]}"
        )


def _iso(score: float) -> str:
    return datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds")


def _tool_summary(item: PendingApproval) -> str:
    calls = ", ".join(f"{c['name']}({_brief(c['input'])})" for c in item.calls)
    return f"tool approval for {item.agent}: {calls}"


def _brief(arguments: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return text if len(text) <= 60 else text[:59] + "…"


def _current_app() -> Celery:
    from celery import current_app

    app: Celery = current_app._get_current_object()
    return app
