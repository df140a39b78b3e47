"""A task's hash: created at submit, read by producers while the task runs and after it ended.

The hash holds the lifecycle (status and its timestamps), the running totals of tokens and cost,
per-agent `queued:`/`running:` counters for progress, the budget limits and the root message.
Steps change it inside their own Lua calls (workers/steps.py); this module creates and reads it.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from messages.status import TaskStatus
from workers import keys, scripts
from workers.audit_events import AuditStream, utc_iso
from workers.steps import StepRecord

_PLAN = scripts.load("plan")

TOTALS = (
    "pattern",
    "status",
    "cost_micro_usd",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "retries",
)
"""What a producer reads when a task ends (not the root message: it can be half a megabyte)."""


def _flat(mapping: dict[str, Any]) -> list[Any]:
    return [part for pair in mapping.items() for part in pair]


class TaskLifecycle:
    """Creates task hashes and reads them; safe to share between threads."""

    def __init__(self, client: redis.Redis, ttl: int, audit: AuditStream) -> None:
        self._redis = client
        self._ttl = ttl
        self._audit = audit

    def submit(self, task_id: str, **fields: Any) -> None:
        """Create the task's hash in one transaction (`submit_commands` names the fields)."""
        self.execute(self.submit_commands(task_id, **fields))

    def execute(self, commands: list[tuple[Any, ...]]) -> None:
        """Run raw Redis commands (as `submit_commands` makes them) in one transaction."""
        with self._redis.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            pipe.execute()

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
        """The task's hash as raw Redis commands, for a caller that sends them in a pipeline of
        its own (the Dispatcher sends them ahead of the task's first message). `planned`
        counts the steps of each agent the workflow will run (see `plan`)."""
        now = utc_iso()
        fields: dict[str, Any] = {
            "status": TaskStatus.SUBMITTED.value,
            "pattern": pattern,
            "submitted_at": now,
            "updated_at": now,
            "root_message": json.dumps(root_message),
            "cost_micro_usd": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "retries": 0,
            "steps": 0,
            **{f"queued:{agent}": count for agent, count in (planned or {}).items()},
        }
        if budget_tokens is not None:
            fields["budget_tokens"] = budget_tokens
        if budget_micro_usd is not None:
            fields["budget_micro_usd"] = budget_micro_usd
        key = keys.task(task_id)
        commands: list[tuple[Any, ...]] = [
            ("HSET", key, *_flat(fields)),
            ("EXPIRE", key, self._ttl),
        ]
        commands += self._audit.commands(
            task_id,
            "submitted",
            at=now,
            status=TaskStatus.SUBMITTED.value,
            task={"status": TaskStatus.SUBMITTED.value, "pattern": pattern, "submitted_at": now},
            detail={"root_message": root_message},
        )
        return commands

    def plan(self, task_id: str, agents: dict[str, int], *, key: str) -> bool:
        """Count steps a grown workflow will run, per agent, before they start (for progress
        and for knowing the task still has work in flight). Once per `key` (the
        continuation's message id): a replayed step's second count is a no-op."""
        if not agents:
            return False
        counted = _PLAN(
            self._redis,
            keys={"task": keys.task(task_id)},
            args={"marker": f"plan:{key}", "ttl": self._ttl, "counts": json.dumps(agents)},
        )
        return bool(counted)

    # -- readers ------------------------------------------------------------------------------

    def totals(self, task_id: str) -> dict[str, str]:
        """The task's status and totals without the rest of its hash; empty when the task is
        unknown or expired."""
        values = cast(list[bytes | None], self._redis.hmget(keys.task(task_id), TOTALS))
        return {k: v.decode() for k, v in zip(TOTALS, values, strict=True) if v is not None}

    def task_info(self, task_id: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.task(task_id)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def steps(self, task_id: str) -> list[StepRecord]:
        """Step records in completion order (from the trace stream)."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], self._redis.xrange(keys.trace(task_id))
        )
        return [StepRecord.from_json(fields[b"record"]) for _, fields in entries]
