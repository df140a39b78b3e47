"""The human review queue: tasks a consensus left split or unsure wait here for a decision.

A task enters the queue in the call that records its last step (record_step with review=True),
or later with `open_review`; a decision (`decide_review`) ends its wait as done or rejected, in
one atomic call that also records who decided, when and why.
"""

from __future__ import annotations

import time
from typing import cast

import redis

from messages.status import TaskStatus
from workers import keys, scripts
from workers.audit_events import AuditStream, utc_iso

REVIEW_TTL = 30 * 24 * 3600
"""Seconds a task waiting for a human keeps its state, whatever CHORUS_STATE_TTL says."""

_OPEN_REVIEW = scripts.load("open_review")
_DECIDE_REVIEW = scripts.load("decide_review")


class Reviews:
    """Opens, decides and lists reviews; safe to share between threads."""

    def __init__(self, client: redis.Redis, audit: AuditStream) -> None:
        self._redis = client
        self._audit = audit

    def open_review(self, task_id: str) -> bool:
        """Queue the task for a human and keep its state until someone decides; False (and
        nothing queued) unless the task's status is needs_review."""
        opened = _OPEN_REVIEW(
            self._redis,
            keys={
                "task": keys.task(task_id),
                "board": keys.board(task_id),
                "trace": keys.trace(task_id),
                "reviews": keys.REVIEWS,
                "audit": keys.AUDIT,
            },
            args={
                "task_id": task_id,
                "score": time.time(),
                "review_ttl": REVIEW_TTL,
                "now": utc_iso(),
                **self._audit.args(),
            },
        )
        return bool(opened)

    def decide_review(self, task_id: str, *, approve: bool, note: str, reviewer: str) -> bool:
        """Record the decision on the task; False when the task is not waiting for review."""
        decided = _DECIDE_REVIEW(
            self._redis,
            keys={"task": keys.task(task_id), "reviews": keys.REVIEWS, "audit": keys.AUDIT},
            args={
                "task_id": task_id,
                "decision": "approved" if approve else "rejected",
                "note": note,
                "reviewer": reviewer,
                "now": utc_iso(),
                "status": TaskStatus.DONE if approve else TaskStatus.REJECTED,
                **self._audit.args(),
            },
        )
        return bool(decided)

    def pending_reviews(self) -> list[tuple[str, float]]:
        """Task ids waiting, oldest first, with when they started waiting."""
        entries = cast(
            list[tuple[bytes, float]], self._redis.zrange(keys.REVIEWS, 0, -1, withscores=True)
        )
        return [(task_id.decode(), score) for task_id, score in entries]
