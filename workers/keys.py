"""Every Redis key Chorus writes, in one place.

Per-task keys share a hash tag (`{task_id}`) so they live in one cluster slot and one Lua script
may touch them all.
"""

from __future__ import annotations

PREFIX = "chorus"

DEAD_LETTERS = f"{PREFIX}:dlq"
"""Stream of terminal errors with the message and cause that produced them."""

AUDIT = f"{PREFIX}:audit"
"""Stream of every message and state transition, drained into SQL by `chorus auditor`."""

AUDITORS = "auditors"
"""Consumer group of the audit stream: several auditors share the work, each entry once."""

DEAD_LETTER_RETRIES = f"{PREFIX}:dlq:retried"
"""Hash: dead-letter entry id -> the message id it was retried as (`chorus dlq retry`)."""

METRICS = f"{PREFIX}:metrics"
"""Hash of fleet-wide counters (`name|agent|model...` -> value) for `chorus metrics`."""

TRANSIT = f"{PREFIX}:transit"
"""Hash: Celery task id -> an agent message published and not yet received by a worker."""

TRANSIT_INDEX = f"{PREFIX}:transit:index"
"""Sorted set: the same ids, scored by when they were published (or last seen on their way)."""

TRANSIT_SUSPECTS = f"{PREFIX}:transit:suspects"
"""Hash: id -> when the reaper first found its message in no queue and no `unacked` hash."""

TRANSIT_RESTORES = f"{PREFIX}:transit:restores"
"""Hash: id -> how often the reaper put its message back."""

TRANSIT_LOCK = f"{PREFIX}:transit:lock"
"""One reaper of the fleet sweeps at a time."""

REVIEWS = f"{PREFIX}:reviews"
"""Sorted set of task ids waiting for a human decision, scored by when they started waiting."""

TOOL_REVIEWS = f"{PREFIX}:reviews:tools"
"""Sorted set of parked steps (`task_id/message_id`) waiting for a human to approve a tool
call, scored by when they parked (workers/approvals.py)."""


def task(task_id: str) -> str:
    """Hash: status, timestamps, pattern, running totals of tokens and cost."""
    return f"{PREFIX}:task:{{{task_id}}}"


def documents(task_id: str) -> str:
    """Hash: document id -> its text, stored once per task and read by every step."""
    return f"{PREFIX}:task:{{{task_id}}}:documents"


def board(task_id: str) -> str:
    """Hash: one field per handled input message id -> step record (JSON). The blackboard."""
    return f"{PREFIX}:task:{{{task_id}}}:board"


def trace(task_id: str) -> str:
    """Stream: one entry per step, in completion order."""
    return f"{PREFIX}:task:{{{task_id}}}:trace"


def budget(task_id: str) -> str:
    """Hash: the task's spend as its budget sees it: reservations and settled calls."""
    return f"{PREFIX}:task:{{{task_id}}}:budget"


def seen(task_id: str) -> str:
    """Hash: input fingerprint (agent + request) -> first message id, for loop detection."""
    return f"{PREFIX}:task:{{{task_id}}}:seen"


def bucket(model: str) -> str:
    """Hash: the fleet's token buckets (requests, input, output per minute) for one model."""
    return f"{PREFIX}:ratelimit:{model}"


def journal(task_id: str, message_id: str) -> str:
    """Hash: one step's tool loop so far (`turn:N`, `tool:ID`, `park`, `decision:ID`), so a
    redelivered step resumes instead of paying for its turns again (workers/journal.py)."""
    return f"{PREFIX}:task:{{{task_id}}}:journal:{message_id}"


BATCH_LOCK = f"{PREFIX}:batch:lock"
"""The batcher's leadership: the leader's token, with a TTL it renews (workers/batcher.py)."""

BATCH_REQUESTS = f"{PREFIX}:batch:requests"
"""Hash: custom_id -> a batched request waiting for its result (task, step, attempt, params)."""

BATCH_MODELS = f"{PREFIX}:batch:models"
"""Set of models with requests pending (each has its `batch_pending` sorted set)."""

BATCHES = f"{PREFIX}:batch:batches"
"""Hash: local batch key -> the batch as the batcher made it: its custom_ids, its state
(`creating`, then `created` with the provider's batch id) and when."""


def batch_pending(model: str) -> str:
    """Sorted set: custom_ids of `model` not yet in a batch, scored by when they were parked."""
    return f"{PREFIX}:batch:pending:{model}"


def batch_step(task_id: str, message_id: str) -> str:
    """Hash: one batched step's calls: `req:N` (custom_id of attempt N), `res:N` (its result),
    `settled:N` (its cost is in the budget), `park` (the signature that resumes the step)."""
    return f"{PREFIX}:task:{{{task_id}}}:batch:{message_id}"


BATCH_OUTBOX = f"{PREFIX}:batch:outbox"
"""Hash: custom_id -> the signature that resumes its step, stored with the result and removed
once the batcher has published it."""
