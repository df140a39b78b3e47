"""Reading a task: its status, steps, messages and final answer, from Redis or, once Redis
has let it expire, the SQL audit trail.

A `Reader` needs only Redis (and the audit database): `chorus status`, `trace` and `review`
use one, so they import neither Celery nor the app. `Dispatcher` is a Reader that also sends.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from messages import AgentMessage, ChorusError
from messages.status import FINISHED
from workers.settings import Settings
from workers.state import StepRecord, TaskState

if TYPE_CHECKING:
    from dispatcher.review import ReviewQueue
    from workers.app import ChorusApp
    from workers.audit_store import AuditStore


class Reader:
    """Tasks in one Redis (and its audit trail), without the Celery app."""

    app: ChorusApp

    def __init__(self, settings: Settings | None = None, state: TaskState | None = None) -> None:
        self.settings = settings or Settings.from_env()
        if state is None:
            from workers.runtime import Runtime

            state = Runtime(self.settings).state
        self.state: TaskState = state
        self._archive: AuditStore | None = None
        self._archive_checked = False

    @property
    def archive(self) -> AuditStore | None:
        """The SQL audit trail, where tasks are still found after their Redis state expired."""
        if not self._archive_checked:
            from workers.audit_store import AuditStore

            self._archive = AuditStore.existing(self.settings.database_url)
            self._archive_checked = True
        return self._archive

    def handle(self, task_id: str) -> TaskHandle:
        return TaskHandle(self, task_id)

    @property
    def reviews(self) -> ReviewQueue:
        """Tasks and parked tool calls waiting for a human decision."""
        from dispatcher.review import ReviewQueue

        return ReviewQueue(self.state, getattr(self, "app", None))


RESULT_RETRY_SECONDS = 0.5
"""Pause before waiting again on a result connection that lost Redis."""


class TaskTimeoutError(ChorusError):
    def __init__(self, task_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"task {task_id} did not finish within {timeout:g}s (status: {status}); "
            f"check it later with `chorus status {task_id}`"
        )


@dataclass(frozen=True)
class TaskOutcome:
    """A finished task: its final message plus the totals the blackboard kept."""

    task_id: str
    pattern: str
    status: str
    message: AgentMessage
    cost_micro_usd: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def result(self) -> dict[str, Any]:
        return self.message.payload


class TaskHandle:
    def __init__(self, dispatcher: Reader, task_id: str, *, fresh: bool = False) -> None:
        self._dispatcher = dispatcher
        self.task_id = task_id
        self._fresh = fresh
        """Just submitted: its first wait goes straight to the result, no state read first."""

    def __repr__(self) -> str:
        return f"TaskHandle(task_id={self.task_id!r})"

    def status(self) -> dict[str, Any]:
        """Status, timestamps and running totals; empty when the task is unknown or expired."""
        info: dict[str, Any] = dict(self._info())
        info.pop("root_message", None)
        return info

    def _info(self) -> dict[str, str]:
        """The task hash from Redis, or from the SQL audit trail once Redis has let it expire."""
        info = self._dispatcher.state.task_info(self.task_id)
        if info:
            return info
        archive = self._dispatcher.archive
        return archive.task_info(self.task_id) if archive else {}

    def wait(self, timeout: float = 120.0) -> TaskOutcome:
        """Block until the task's final message arrives; raises TaskTimeoutError, never hangs.

        A task that already ended (or waits for review) is answered from its recorded state,
        so this works after the Celery result has expired too.
        """
        message = None if self._fresh else self._recorded_final()
        self._fresh = False
        if message is None:
            raw = self._result(timeout)
            if not isinstance(raw, dict):
                raise ChorusError(f"task {self.task_id} ended without a message: {raw!r}")
            message = AgentMessage.from_dict(raw)
        info = self._dispatcher.state.totals(self.task_id) or self._info()
        return TaskOutcome(
            task_id=self.task_id,
            pattern=info.get("pattern", "unknown"),
            status=info.get("status") or ("done" if message.message_type == "result" else "failed"),
            message=message,
            cost_micro_usd=int(info.get("cost_micro_usd", 0)),
            input_tokens=int(info.get("input_tokens", 0)),
            output_tokens=int(info.get("output_tokens", 0)),
            cache_creation_input_tokens=int(info.get("cache_creation_input_tokens", 0)),
            cache_read_input_tokens=int(info.get("cache_read_input_tokens", 0)),
            retries=int(info.get("retries", 0)),
        )

    def _result(self, timeout: float) -> Any:
        """The task's Celery result, waited for up to `timeout` across result connections that
        lost Redis (each reconnect is one attempt: workers/results.py)."""
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import AsyncResult

        deadline = time.monotonic() + timeout
        while True:
            result = AsyncResult(self.task_id, app=self._dispatcher.app)
            try:
                left = max(0.0, deadline - time.monotonic())
                return result.get(timeout=left, propagate=False, disable_sync_subtasks=False)
            except CeleryTimeout:
                break
            except (redis.RedisError, RuntimeError) as exc:
                if not _lost_redis(exc):
                    raise
                if time.monotonic() + RESULT_RETRY_SECONDS >= deadline:
                    break
                time.sleep(RESULT_RETRY_SECONDS)
            finally:
                _stop_listening(result)
        try:
            status = self.status().get("status", "unknown")
        except redis.RedisError:
            status = "unknown (Redis does not answer)"
        raise TaskTimeoutError(self.task_id, timeout, status)

    def _recorded_final(self) -> AgentMessage | None:
        info = self._info()
        final_id = info.get("final_message_id")
        if info.get("status") not in FINISHED or not final_id:
            return None
        if any(int(v) > 0 for k, v in info.items() if k.startswith(("running:", "queued:"))):
            return None  # ended early (budget), but steps in flight still finish and bill
        for step in self.trace():
            if step.message.get("message_id") == final_id:
                return AgentMessage.from_dict(step.message)
        return None

    def trace(self) -> list[StepRecord]:
        """Every step the task took, in completion order (from SQL once Redis has expired it)."""
        steps = self._dispatcher.state.steps(self.task_id)
        archive = self._dispatcher.archive
        if steps or archive is None or self._dispatcher.state.task_info(self.task_id):
            return steps
        return [StepRecord(**record) for record in archive.step_records(self.task_id)]

    def messages(self) -> list[AgentMessage]:
        """Every message of the task (root, step inputs and outputs), parents before children."""
        info = self._info()
        raw = [json.loads(info["root_message"])] if "root_message" in info else []
        for step in self.trace():
            raw.extend(m for m in (step.input_message, step.message) if m)
        unique = {m["message_id"]: m for m in raw}
        return lineage_order([AgentMessage.from_dict(m) for m in unique.values()])


def _lost_redis(exc: BaseException) -> bool:
    """A result connection that lost Redis: a redis error, or Celery's "must be restarted"
    RuntimeError raised from one when its reconnect failed."""
    return isinstance(exc, redis.RedisError) or isinstance(exc.__cause__, redis.RedisError)


def _stop_listening(result: Any) -> None:
    """Leave the task's result channel now, in the waiting thread, while its Redis answers.

    Celery leaves it when the result arrives; after a timeout it is left to
    `AsyncResult.__del__`, which runs wherever the garbage collector runs, perhaps long after.
    On a connection that lost Redis there is nothing to leave: the next one subscribes afresh.
    """
    backend, result.backend = result.backend, None  # nothing left for __del__ to do
    if backend is not None:
        with contextlib.suppress(redis.RedisError, RuntimeError):
            backend.remove_pending_result(result)


def lineage_order(messages: list[AgentMessage]) -> list[AgentMessage]:
    """Depth-first from the roots by parent_message_id; siblings by timestamp."""
    ids = {m.message_id for m in messages}
    children: dict[str | None, list[AgentMessage]] = {}
    for message in messages:
        parent = message.parent_message_id if message.parent_message_id in ids else None
        children.setdefault(parent, []).append(message)
    ordered: list[AgentMessage] = []
    stack = sorted(children.get(None, []), key=lambda m: m.timestamp, reverse=True)
    while stack:
        message = stack.pop()
        ordered.append(message)
        kids = children.get(message.message_id, [])
        stack.extend(sorted(kids, key=lambda m: m.timestamp, reverse=True))
    return ordered
