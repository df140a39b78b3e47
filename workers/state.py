"""Task state in Redis, as one object: the task's hash, its steps, reviews and dead letters.

`TaskState` composes the modules that do each job (workers/lifecycle.py, steps.py, reviews.py,
deadletters.py, audit_events.py) behind the calls the runner, the tasks and the Dispatcher
make; the names that used to live here are re-exported so old imports keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from workers.audit_events import AuditStream, utc_iso
from workers.budget import HoldArgs, Settlement
from workers.deadletters import (
    DEAD_LETTER_BODY_LIMIT,
    DEAD_LETTER_MAXLEN,
    DeadLetter,
    DeadLetterWriter,
)
from workers.lifecycle import TaskLifecycle
from workers.reviews import REVIEW_TTL, Reviews
from workers.steps import SUMMARY_FIELDS, SUMMARY_LIMIT, Begin, StepRecord, StepStore, digest

__all__ = [
    "DEAD_LETTER_BODY_LIMIT",
    "DEAD_LETTER_MAXLEN",
    "REVIEW_TTL",
    "SUMMARY_FIELDS",
    "SUMMARY_LIMIT",
    "Begin",
    "DeadLetter",
    "StepRecord",
    "TaskState",
    "digest",
    "utc_iso",
]


class TaskState:
    """Reads and writes one Redis's task state; safe to share between threads.

    `audit_maxlen` and `audit_max_age` bound the audit stream while no auditor drains it
    (count and seconds; see workers/audit_events.py); `audit=False` writes no audit events.
    """

    def __init__(
        self,
        client: redis.Redis,
        ttl: int,
        *,
        audit: bool = True,
        audit_maxlen: int = 100_000,
        audit_max_age: float = 0.0,
    ) -> None:
        self.redis = client
        self.audit = AuditStream(maxlen=audit_maxlen if audit else 0, max_age=audit_max_age)
        self.lifecycle = TaskLifecycle(client, ttl, self.audit)
        self.step_store = StepStore(client, ttl, self.audit)
        self.reviews = Reviews(client, self.audit)
        self.dead_letters = DeadLetterWriter(client, self.audit)

    # -- producer side ------------------------------------------------------------------------

    def submit(self, task_id: str, **fields: Any) -> None:
        self.lifecycle.submit(task_id, **fields)

    def execute(self, commands: list[tuple[Any, ...]]) -> None:
        self.lifecycle.execute(commands)

    def submit_commands(
        self,
        task_id: str,
        *,
        pattern: str,
        root_message: dict[str, Any],
        budget_tokens: int | None = None,
        budget_micro_usd: int | None = None,
        planned: dict[str, int] | None = None,
    ) -> list[tuple[Any, ...]]:
        return self.lifecycle.submit_commands(
            task_id,
            pattern=pattern,
            root_message=root_message,
            budget_tokens=budget_tokens,
            budget_micro_usd=budget_micro_usd,
            planned=planned,
        )

    def plan(self, task_id: str, agents: dict[str, int], *, key: str) -> bool:
        return self.lifecycle.plan(task_id, agents, key=key)

    # -- worker side --------------------------------------------------------------------------

    def begin_step(
        self,
        task_id: str,
        input_message_id: str,
        agent: str,
        fingerprint: str = "",
        *,
        hold: HoldArgs | Sequence[Any] = (),
    ) -> Begin:
        return self.step_store.begin_step(task_id, input_message_id, agent, fingerprint, hold=hold)

    def record_step(
        self,
        record: StepRecord,
        *,
        final_status: str | None,
        settle: Settlement | None = None,
        review: bool = False,
        dead_letter: DeadLetter | None = None,
    ) -> StepRecord:
        """See StepStore.record_step: `review` and `dead_letter` are written in the same call,
        and only when this call stored the record."""
        return self.step_store.record_step(
            record, final_status=final_status, settle=settle, review=review, dead_letter=dead_letter
        )

    def dead_letter(
        self,
        *,
        task_id: str,
        agent: str,
        code: str,
        error: str,
        body: object,
        options: dict[str, Any] | None = None,
    ) -> None:
        """A dead letter with no step record to ride with (an undecodable message)."""
        letter = DeadLetter(agent=agent, code=code, error=error, body=body, options=options)
        self.dead_letters.write(task_id, letter, at=utc_iso())

    def was_started(self, task_id: str, message_id: str) -> bool:
        return self.step_store.was_started(task_id, message_id)

    # -- human review -------------------------------------------------------------------------

    def open_review(self, task_id: str) -> None:
        self.reviews.open_review(task_id)

    def decide_review(self, task_id: str, *, approve: bool, note: str, reviewer: str) -> bool:
        return self.reviews.decide_review(task_id, approve=approve, note=note, reviewer=reviewer)

    def pending_reviews(self) -> list[tuple[str, float]]:
        return self.reviews.pending_reviews()

    # -- readers ------------------------------------------------------------------------------

    def totals(self, task_id: str) -> dict[str, str]:
        return self.lifecycle.totals(task_id)

    def task_info(self, task_id: str) -> dict[str, str]:
        return self.lifecycle.task_info(task_id)

    def steps(self, task_id: str) -> list[StepRecord]:
        return self.lifecycle.steps(task_id)
