"""The human review queue: consensus runs the judge could not settle wait here for a person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from messages import ChorusError
from workers.state import TaskState


@dataclass(frozen=True)
class PendingReview:
    task_id: str
    since: str
    summary: str


class ReviewQueue:
    def __init__(self, state: TaskState) -> None:
        self._state = state

    def list(self) -> list[PendingReview]:
        pending = []
        for task_id, score in self._state.pending_reviews():
            since = datetime.fromtimestamp(score, UTC).isoformat(timespec="seconds")
            pending.append(PendingReview(task_id, since, self._summary(task_id)))
        return pending

    def show(self, task_id: str) -> dict[str, Any]:
        """The task's status and every step's answer, for a reviewer to read."""
        info = self._state.task_info(task_id)
        if not info:
            raise ChorusError(f"no task {task_id} (unknown, or its state expired)")
        info.pop("root_message", None)
        steps = [
            {"agent": s.agent, "status": s.status, "answer": s.message.get("payload")}
            for s in self._state.steps(task_id)
        ]
        return {"task_id": task_id, **info, "steps": steps}

    def decide(self, task_id: str, *, approve: bool, note: str = "", reviewer: str) -> None:
        if not approve and not note:
            raise ChorusError("a rejection needs a note saying why")
        if not self._state.decide_review(task_id, approve=approve, note=note, reviewer=reviewer):
            status = self._state.task_info(task_id).get("status", "unknown")
            raise ChorusError(f"task {task_id} is not waiting for review (status: {status})")

    def approve(self, task_id: str, *, note: str = "", reviewer: str = "unknown") -> None:
        self.decide(task_id, approve=True, note=note, reviewer=reviewer)

    def reject(self, task_id: str, *, note: str, reviewer: str = "unknown") -> None:
        self.decide(task_id, approve=False, note=note, reviewer=reviewer)

    def _summary(self, task_id: str) -> str:
        steps = self._state.steps(task_id)
        if not steps:
            return ""
        payload = steps[-1].message.get("payload", {})
        return (
            f"consensus {payload.get('consensus')} (confidence {payload.get('confidence')}): "
            f"{str(payload.get('recommendation', ''))[:80]}"
        )
