"""The SQL audit trail: every message and state transition, kept after Redis has forgotten them.

SQLAlchemy Core over two tables, so the same code runs on SQLite (the embedded default) and
PostgreSQL (production). Rows are keyed by their audit-stream id, so writing a batch twice (an
auditor that died before acknowledging it) changes nothing. Id and name columns are sized from
the envelope's own limits (messages/envelope.py), so any valid message fits; a row SQL refuses
all the same is set apart (`write_or_isolate`) instead of holding its whole batch back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from messages.envelope import ID_MAX_LENGTH, NAME_MAX_LENGTH
from workers import audit_tools

metadata = sa.MetaData()

events = sa.Table(
    "chorus_audit_events",
    metadata,
    # The Redis stream id, zero-padded so text order is time order.
    sa.Column("event_id", sa.String(32), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("task_id", sa.String(ID_MAX_LENGTH), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("agent", sa.String(NAME_MAX_LENGTH)),
    sa.Column("status", sa.String(32)),
    sa.Column("message_id", sa.String(ID_MAX_LENGTH)),
    sa.Column("parent_message_id", sa.String(ID_MAX_LENGTH)),
    sa.Column("model", sa.String(128)),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cost_micro_usd", sa.BigInteger, nullable=False, default=0),
    # JSON: the step record (input and output messages, raw output), dead letter or decision.
    sa.Column("detail", sa.Text),
    sa.Index("ix_chorus_audit_agent_at", "agent", "at"),
    sa.Index("ix_chorus_audit_at", "at"),
)

tasks = sa.Table(
    "chorus_tasks",
    metadata,
    sa.Column("task_id", sa.String(ID_MAX_LENGTH), primary_key=True),
    sa.Column("pattern", sa.String(32)),
    sa.Column("status", sa.String(32), index=True),
    sa.Column("submitted_at", sa.DateTime(timezone=True), index=True),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("cost_micro_usd", sa.BigInteger, nullable=False, default=0),
    sa.Column("root_message", sa.Text),
    # JSON: the task hash as of the latest event (status, timestamps, totals).
    sa.Column("info", sa.Text, nullable=False),
    sa.Column("last_event_id", sa.String(32), nullable=False),
)


tool_calls = audit_tools.define_table(metadata)
"""One row per tool call of a recorded step (workers/audit_tools.py)."""


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit stream, decoded."""

    event_id: str
    kind: str
    task_id: str
    at: datetime
    task: dict[str, str] | None
    fields: dict[str, str]

    def row(self) -> dict[str, Any]:
        raw_record = self.fields.get("record")
        record: dict[str, Any] = json.loads(raw_record) if raw_record else {}
        message = record.get("message") or {}
        usage = record.get("usage") or {}
        detail = self.fields.get("record") or self.fields.get("detail")
        return {
            "event_id": self.event_id,
            "at": self.at,
            "task_id": self.task_id,
            "kind": self.kind,
            "agent": self.fields.get("agent") or record.get("agent"),
            "status": record.get("status") or self.fields.get("status"),
            "message_id": message.get("message_id") or self.fields.get("message_id"),
            "parent_message_id": message.get("parent_message_id"),
            "model": record.get("model"),
            "input_tokens": int(usage.get("input_tokens", 0)),
            "output_tokens": int(usage.get("output_tokens", 0)),
            "cost_micro_usd": int(record.get("cost_micro_usd", 0)),
            "detail": detail,
        }


@dataclass(frozen=True)
class AuditWrite:
    """What a write did: rows new to the table, and events whose row could not be written."""

    added: int
    failed: list[tuple[AuditEvent, Exception]]


def _row_fault(exc: Exception) -> bool:
    """Is this the fault of one row: a value its column refuses (too long, out of range, a NUL
    byte), a broken constraint, a record that cannot become a row? Any other error is the
    database's own (unreachable, locked, a table missing, no permission): retry the batch."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return False
    return isinstance(
        exc, sa.exc.StatementError | ValueError | TypeError | KeyError | ArithmeticError
    )


def sortable_event_id(stream_id: str) -> str:
    """'1732545120000-3' -> '001732545120000-000003': text order equals stream order."""
    millis, _, seq = stream_id.partition("-")
    return f"{int(millis):015d}-{int(seq or 0):06d}"


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class AuditStore:
    """Writes audit batches and answers audit questions; one per process, thread-safe."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        if url.startswith("sqlite:///") and create:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            metadata.create_all(self.engine)
            self._widen_columns()

    @classmethod
    def existing(cls, url: str) -> AuditStore | None:
        """The store if it was ever created; readers must not create an empty SQLite file."""
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return None
        store = cls(url, create=False)
        if not sa.inspect(store.engine).has_table(tasks.name):
            return None
        return store

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ------------------------------------------------------------------------------

    def _widen_columns(self) -> None:
        """Tables an older Chorus created keep their column sizes; widen any shorter string
        column to today's size (PostgreSQL enforces them, SQLite does not)."""
        if self.engine.dialect.name != "postgresql":
            return
        inspector = sa.inspect(self.engine)
        with self.engine.begin() as connection:
            for table in (events, tasks):
                found = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    want = getattr(column.type, "length", None)
                    have = getattr(found.get(column.name), "length", None)
                    if want and have and have < want:
                        connection.execute(
                            sa.text(
                                f'ALTER TABLE "{table.name}" ALTER COLUMN "{column.name}" '
                                f"TYPE VARCHAR({int(want)})"
                            )
                        )

    def write(self, batch: Sequence[AuditEvent]) -> int:
        """Insert a batch in one transaction; returns rows new to the table."""
        if not batch:
            return 0
        insert, rows = self._insert(events), [event.row() for event in batch]
        with self.engine.begin() as connection:
            added = connection.execute(
                insert.values(rows).on_conflict_do_nothing(index_elements=["event_id"])
            ).rowcount
            for row in self._task_rows(batch):
                connection.execute(self._upsert_task(row))
            calls = audit_tools.rows(rows)
            if calls:
                keyed = ["event_id", "tool_use_id"]
                insert_calls = self._insert(tool_calls).values(calls)
                connection.execute(insert_calls.on_conflict_do_nothing(index_elements=keyed))
        return max(int(added or 0), 0)

    def write_or_isolate(self, batch: Sequence[AuditEvent]) -> AuditWrite:
        """Insert a batch in one transaction; if that fails, insert it event by event and set
        apart the events whose row cannot be written (any database error for that row, or a
        record that cannot become a row), so one bad row never holds its batch back forever.

        Errors of the database itself (unreachable, locked, a table missing) are raised
        instead: the batch stays pending and is retried, nothing is set apart."""
        try:
            return AuditWrite(self.write(batch), [])
        except Exception as exc:
            if not _row_fault(exc):
                raise
        added = 0
        failed: list[tuple[AuditEvent, Exception]] = []
        for event in batch:
            try:
                added += self.write([event])
            except Exception as exc:
                if not _row_fault(exc):
                    raise
                failed.append((event, exc))
        return AuditWrite(added, failed)

    def _insert(self, table: sa.Table) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def _task_rows(self, batch: Iterable[AuditEvent]) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for event in sorted(batch, key=lambda e: e.event_id):
            if event.task is None:
                continue
            row = latest.setdefault(event.task_id, {"task_id": event.task_id, "info": {}})
            row["info"] = {**row["info"], **event.task}
            row["last_event_id"] = event.event_id
            if event.kind == "submitted" and "detail" in event.fields:
                root = json.loads(event.fields["detail"]).get("root_message")
                row["root_message"] = json.dumps(root)
        for row in latest.values():
            info: dict[str, str] = row["info"]
            row["pattern"] = info.get("pattern")
            row["status"] = info.get("status")
            for name in ("submitted_at", "finished_at"):
                row[name] = parse_time(info[name]) if info.get(name) else None
            row["cost_micro_usd"] = int(info.get("cost_micro_usd", 0) or 0)
            row["info"] = json.dumps(info)
            row.setdefault("root_message", None)
        return list(latest.values())

    def _upsert_task(self, row: dict[str, Any]) -> Any:
        statement = self._insert(tasks).values(row)
        excluded = statement.excluded
        newer = tasks.c.last_event_id < excluded.last_event_id
        updates = {
            name: excluded[name]
            for name in (
                "pattern",
                "status",
                "submitted_at",
                "finished_at",
                "cost_micro_usd",
                "info",
                "last_event_id",
            )
        }
        # A late submitted event (another auditor's batch) still brings the root message.
        updates["root_message"] = sa.func.coalesce(tasks.c.root_message, excluded.root_message)
        return statement.on_conflict_do_update(
            index_elements=["task_id"],
            set_={
                name: sa.case((newer, value), else_=getattr(tasks.c, name))
                if name != "root_message"
                else value
                for name, value in updates.items()
            },
        )

    # -- reading ------------------------------------------------------------------------------

    def task_info(self, task_id: str) -> dict[str, str]:
        """The task hash as Redis last had it (root message included); empty when unknown."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(tasks.c.info, tasks.c.root_message).where(tasks.c.task_id == task_id)
            ).first()
        if row is None:
            return {}
        info: dict[str, str] = json.loads(row.info)
        if row.root_message:
            info["root_message"] = row.root_message
        return info

    def step_records(self, task_id: str) -> list[dict[str, Any]]:
        """Step records (as dicts) in completion order, one per handled input message."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(events.c.detail)
                .where(events.c.task_id == task_id, events.c.kind == "step")
                .order_by(events.c.event_id)
            ).all()
        return [json.loads(row.detail) for row in rows]

    def query(
        self,
        *,
        agent: str | None = None,
        task_id: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Events matching every given filter, oldest first: 'what did agent X do at 14:32?'"""
        statement = sa.select(events).order_by(events.c.event_id).limit(limit)
        if agent is not None:
            statement = statement.where(events.c.agent == agent)
        if task_id is not None:
            statement = statement.where(events.c.task_id == task_id)
        if kind is not None:
            statement = statement.where(events.c.kind == kind)
        if since is not None:
            statement = statement.where(events.c.at >= since.astimezone(UTC))
        if until is not None:
            statement = statement.where(events.c.at < until.astimezone(UTC))
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
        return [{**row, "at": _utc(row["at"])} for row in rows]

    def tool_calls(self, name: str, **filters: Any) -> list[dict[str, Any]]:
        """Calls of tool `name`, oldest first (filters: see audit_tools.query)."""
        with self.engine.connect() as connection:
            return audit_tools.query(connection, tool_calls, name=name, **filters)

    def count(self) -> int:
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(events))
            return int(total.scalar_one())


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL lets readers (`chorus audit`) work while the auditor writes; wait instead of failing."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
