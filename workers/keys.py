"""Every Redis key Chorus writes, in one place.

Per-task keys share a hash tag (`{task_id}`) so they live in one cluster slot and one Lua script
may touch them all.
"""

from __future__ import annotations

PREFIX = "chorus"

DEAD_LETTERS = f"{PREFIX}:dlq"
"""Stream of terminal errors with the message and cause that produced them."""

REVIEWS = f"{PREFIX}:reviews"
"""Sorted set of task ids waiting for a human decision, scored by when they started waiting."""


def task(task_id: str) -> str:
    """Hash: status, timestamps, pattern, running totals of tokens and cost."""
    return f"{PREFIX}:task:{{{task_id}}}"


def board(task_id: str) -> str:
    """Hash: one field per handled input message id -> step record (JSON). The blackboard."""
    return f"{PREFIX}:task:{{{task_id}}}:board"


def trace(task_id: str) -> str:
    """Stream: one entry per step, in completion order."""
    return f"{PREFIX}:task:{{{task_id}}}:trace"
