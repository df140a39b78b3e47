"""The audit stream's writing side: how events are bounded, and a watch for when nothing drains it.

Events are appended by the Lua scripts (lib/audit.lua) in the call that makes the change, or by
`AuditStream.commands` in a pipeline. Redis keeps them until an auditor writes them to SQL and
deletes them; with no auditor running the stream would grow without end on a `noeviction`
Redis, so it is bounded twice: by count (XADD MAXLEN ~) and by age (XTRIM MINID ~). A worker
also warns, once per interval, while the oldest event waiting is older than that interval.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis

from workers import keys

log = logging.getLogger("chorus.audit")


def utc_iso() -> str:
    """Now as every state and audit timestamp is written (ISO 8601, UTC)."""
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class AuditStream:
    """Where audit events go and how many Redis keeps while no auditor drains them."""

    maxlen: int = 100_000
    """Events kept, approximately; 0 switches the audit stream off."""
    max_age: float = 0.0
    """Seconds an event is kept; 0 keeps events of any age (the count still bounds them)."""

    @property
    def enabled(self) -> bool:
        return self.maxlen > 0

    def minid(self, now: float | None = None) -> str:
        """The oldest stream id kept now ('' when events of any age are)."""
        if self.max_age <= 0:
            return ""
        oldest = (time.time() if now is None else now) - self.max_age
        return f"{max(0, int(oldest * 1000))}-0"

    def args(self) -> dict[str, str | int]:
        """The audit ARGV every script that writes an event takes."""
        return {"audit_maxlen": self.maxlen, "audit_minid": self.minid()}

    def commands(
        self,
        task_id: str,
        kind: str,
        *,
        at: str,
        task: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        **fields: str,
    ) -> list[tuple[Any, ...]]:
        """The XADD (and age trim) of one event, for a pipeline; nothing when the stream is off."""
        if not self.enabled:
            return []
        entry: dict[str, str] = {"kind": kind, "task_id": task_id, "at": at, **fields}
        if task is not None:
            entry["task"] = json.dumps(task)
        if detail is not None:
            entry["detail"] = json.dumps(detail, default=repr)
        flat = [part for pair in entry.items() for part in pair]
        commands: list[tuple[Any, ...]] = [
            ("XADD", keys.AUDIT, "MAXLEN", "~", self.maxlen, "*", *flat)
        ]
        if minid := self.minid():
            commands.append(("XTRIM", keys.AUDIT, "MINID", "~", minid))
        return commands


# -- is anyone draining it? --------------------------------------------------------------------


def undrained(client: redis.Redis, *, older_than: float, now: float | None = None) -> str | None:
    """A warning when the oldest event waiting is older than `older_than` seconds, else None.

    Auditors delete what they wrote, so the oldest entry left is the oldest not yet in SQL; a
    healthy auditor keeps it about a second old (a crashed one's batch is claimed after 60 s).
    """
    now = time.time() if now is None else now
    first = cast(list[tuple[bytes, Any]], client.xrange(keys.AUDIT, count=1))
    if not first:
        return None
    age = now - int(first[0][0].split(b"-")[0]) / 1000
    if age < older_than:
        return None
    waiting = int(client.xlen(keys.AUDIT))
    return (
        f"the audit stream {keys.AUDIT} holds {waiting} event(s), the oldest {age:.0f} s old: "
        f"{_readers(client)}. Start `chorus auditor` (it writes them to SQL); until then "
        "Redis keeps only the newest CHORUS_AUDIT_MAXLEN events and none older than "
        "CHORUS_AUDIT_MAX_AGE seconds"
    )


def _readers(client: redis.Redis) -> str:
    groups: list[dict[str, Any]] = client.xinfo_groups(keys.AUDIT)
    group = next((g for g in groups if _text(g.get("name")) == keys.AUDITORS), None)
    if group is None:
        return "no auditor has ever read it"
    consumers: list[dict[str, Any]] = client.xinfo_consumers(keys.AUDIT, keys.AUDITORS)
    lag = group.get("lag")
    behind = f", {lag} unread" if lag is not None else ""
    if not consumers:
        return f"its auditors' group has no consumer{behind}"
    idle = min(int(c.get("idle", 0)) for c in consumers) / 1000
    return (
        f"{len(consumers)} auditor(s) known, the most recent active {idle:.0f} s ago, "
        f"{group.get('pending', 0)} event(s) read and not written{behind}"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
