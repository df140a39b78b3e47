"""The console's task list: live tasks from their Redis hashes, older ones from the SQL trail.

Redis keeps no index of tasks, so live ones are found by SCAN over the task hashes (bounded by
`scan_limit`); the SQL `chorus_tasks` table has every task the auditor wrote, Redis having
expired it or not. A task in both is shown as Redis has it (the newer copy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis
import sqlalchemy as sa

from workers import keys
from workers.audit_store import AuditStore
from workers.audit_store import tasks as tasks_table

SUMMARY_FIELDS = (
    "status",
    "pattern",
    "workflow",
    "submitted_at",
    "finished_at",
    "updated_at",
    "cost_micro_usd",
    "input_tokens",
    "output_tokens",
    "steps",
)
_AGENT_PREFIXES = ("queued:", "running:")
_TASK_MATCH = keys.task("*")


@dataclass(frozen=True)
class TaskFilter:
    """What the task list is narrowed to; None (or '') matches anything."""

    status: str | None = None
    workflow: str | None = None
    """The workflow's name, or the built-in pattern's for tasks submitted by pattern."""
    agent: str | None = None

    def matches(self, row: TaskRow) -> bool:
        return (
            (not self.status or row.status == self.status)
            and (not self.workflow or row.workflow == self.workflow)
            and (not self.agent or self.agent in row.agents)
        )


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    status: str
    workflow: str
    submitted_at: str
    finished_at: str
    cost_micro_usd: int
    input_tokens: int
    output_tokens: int
    steps: int
    agents: tuple[str, ...]
    source: str
    """'redis' (live state) or 'sql' (the audit trail, after Redis expired it)."""

    def document(self) -> dict[str, Any]:
        return {**asdict(self), "agents": list(self.agents)}


def row_from_hash(
    task_id: str, info: Mapping[str, str], fields: Iterable[str], source: str
) -> TaskRow:
    """A list row from a task hash (or the SQL copy of one); `fields` are the hash's names."""
    agents = sorted({f.split(":", 1)[1] for f in fields if f.startswith(_AGENT_PREFIXES)})
    return TaskRow(
        task_id=task_id,
        status=info.get("status") or "unknown",
        workflow=info.get("workflow") or info.get("pattern") or "",
        submitted_at=info.get("submitted_at") or "",
        finished_at=info.get("finished_at") or "",
        cost_micro_usd=_int(info.get("cost_micro_usd")),
        input_tokens=_int(info.get("input_tokens")),
        output_tokens=_int(info.get("output_tokens")),
        steps=_int(info.get("steps")),
        agents=tuple(agents),
        source=source,
    )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class TaskIndex:
    """Lists tasks for the console; blocking calls, made off the server's event loop."""

    def __init__(
        self,
        client: redis.Redis,
        archive: Callable[[], AuditStore | None],
        *,
        scan_limit: int = 5000,
    ) -> None:
        self._redis = client
        self._archive = archive
        """The SQL audit trail, or None while no auditor has created it."""
        self._scan_limit = scan_limit

    def rows(self, wanted: TaskFilter, *, limit: int = 200) -> list[TaskRow]:
        """Newest first, live tasks and archived ones together."""
        rows = {row.task_id: row for row in self._archived(wanted, limit)}
        rows.update((row.task_id, row) for row in self._live())
        found = [row for row in rows.values() if wanted.matches(row)]
        found.sort(key=lambda row: row.submitted_at, reverse=True)
        return found[:limit]

    def _live(self) -> list[TaskRow]:
        task_ids: list[str] = []
        for key in self._redis.scan_iter(match=_TASK_MATCH, count=1000, _type="HASH"):
            name = cast(bytes, key).decode()
            if name.endswith("}"):  # not one of the task's other hashes (board, budget, seen)
                task_ids.append(name[len(keys.task("")) - 1 : -1])
            if len(task_ids) >= self._scan_limit:
                break
        with self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(keys.task(task_id), SUMMARY_FIELDS)
                pipe.hkeys(keys.task(task_id))
            replies = pipe.execute()
        rows = []
        for index, task_id in enumerate(task_ids):
            values, names = replies[2 * index], replies[2 * index + 1]
            if not names:  # expired between SCAN and HMGET
                continue
            info = {k: v.decode() for k, v in zip(SUMMARY_FIELDS, values, strict=True) if v}
            rows.append(row_from_hash(task_id, info, (n.decode() for n in names), "redis"))
        return rows

    def _archived(self, wanted: TaskFilter, limit: int) -> list[TaskRow]:
        archive = self._archive()  # asked each time: the auditor may create it after we start
        if archive is None:
            return []
        statement = (
            sa.select(tasks_table.c.task_id, tasks_table.c.info)
            .order_by(tasks_table.c.submitted_at.desc())
            .limit(limit * 4)  # workflow and agent are filtered below, from the JSON snapshot
        )
        if wanted.status:
            statement = statement.where(tasks_table.c.status == wanted.status)
        with archive.engine.connect() as connection:
            found = connection.execute(statement).all()
        rows = []
        for task_id, raw in found:
            info: dict[str, str] = {k: str(v) for k, v in json.loads(raw).items()}
            rows.append(row_from_hash(task_id, info, info, "sql"))
        return rows
