"""Every status a task or a step can have, spelled once.

The Lua scripts get the same values from a prelude the loader generates (`workers/scripts.py`),
so no script spells a status literal that could drift from these.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """A task's lifecycle: submitted -> running -> done | failed | needs_review | budget_exceeded;
    a review ends needs_review as done or rejected."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"
    BUDGET_EXCEEDED = "budget_exceeded"


FINISHED = frozenset(
    {
        TaskStatus.DONE,
        TaskStatus.FAILED,
        TaskStatus.REJECTED,
        TaskStatus.NEEDS_REVIEW,
        TaskStatus.BUDGET_EXCEEDED,
    }
)
"""Statuses a producer stops waiting at (a task in review waits for a human, not a worker)."""


class StepStatus(StrEnum):
    """How one agent step ended (a step record's `status`)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    """Not run: the task ended (its budget ran out) before the step started."""
