"""Tool calls in the SQL audit trail: one row per call of a recorded step (`chorus audit --tool`).

The rows come from the step records the audit stream already carries (`step` events), so a
call is audited in the same write as its step and costs the hot path nothing. Keyed by the
step's event id and the call's tool_use_id: writing a batch twice adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from messages.envelope import ID_MAX_LENGTH, NAME_MAX_LENGTH

TEXT_LIMIT = 10_000
"""Characters of a call's input, output or error kept in SQL (the step record has them all)."""


def define_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "chorus_audit_tool_calls",
        metadata,
        sa.Column("event_id", sa.String(32), primary_key=True),
        sa.Column("tool_use_id", sa.String(ID_MAX_LENGTH), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_id", sa.String(ID_MAX_LENGTH), nullable=False, index=True),
        sa.Column("message_id", sa.String(ID_MAX_LENGTH)),
        sa.Column("agent", sa.String(NAME_MAX_LENGTH)),
        sa.Column("name", sa.String(64), nullable=False, index=True),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("input", sa.Text),
        sa.Column("output", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float, nullable=False, default=0.0),
    )


def rows(event_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per tool call of each `step` event row (AuditEvent.row())."""
    out: list[dict[str, Any]] = []
    for event in event_rows:
        if event["kind"] != "step" or not event.get("detail"):
            continue
        record = json.loads(event["detail"])
        for call in record.get("tool_calls") or []:
            out.append(
                {
                    "event_id": event["event_id"],
                    "tool_use_id": call["tool_use_id"],
                    "at": event["at"],
                    "task_id": event["task_id"],
                    "message_id": record.get("input_message_id"),
                    "agent": record.get("agent"),
                    "name": call["name"],
                    "turn": int(call["turn"]),
                    "input": _clip(json.dumps(call.get("input"), sort_keys=True)),
                    "output": _clip(call.get("output")),
                    "error": _clip(call.get("error")),
                    "duration_ms": float(call.get("duration_ms") or 0.0),
                }
            )
    return out


def query(
    connection: Connection,
    table: sa.Table,
    *,
    name: str,
    agent: str | None = None,
    task_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    errors_only: bool = False,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Calls of tool `name` matching every filter, oldest first."""
    statement = (
        sa.select(table)
        .where(table.c.name == name)
        .order_by(table.c.event_id, table.c.turn)
        .limit(limit)
    )
    if agent is not None:
        statement = statement.where(table.c.agent == agent)
    if task_id is not None:
        statement = statement.where(table.c.task_id == task_id)
    if since is not None:
        statement = statement.where(table.c.at >= since.astimezone(UTC))
    if until is not None:
        statement = statement.where(table.c.at < until.astimezone(UTC))
    if errors_only:
        statement = statement.where(table.c.error.is_not(None))
    found = connection.execute(statement).mappings().all()
    return [{**row, "at": _aware(row["at"])} for row in found]


def describe(row: dict[str, Any]) -> str:
    """One line of `chorus audit --tool NAME`."""
    at: datetime = row["at"]
    result = f"error: {row['error']}" if row["error"] is not None else f"→ {row['output']}"
    text = (
        f"{at.isoformat(timespec='milliseconds')}  {row['task_id']}  {row['agent']} turn "
        f"{row['turn']}  {row['name']}({row['input']}) {result}  {row['duration_ms']:.0f} ms"
    )
    return " ".join(text.split())


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= TEXT_LIMIT else value[: TEXT_LIMIT - 1] + "…"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
