"""Step records: what one agent did with one input message, begun and stored once.

Each step is two Lua calls keyed by its input message id. begin_step marks it running, or says
why it must not run (handled already, stopped by the budget, a delegation loop, no budget for
its first call). record_step stores the record with everything that goes with it (totals,
trace, metrics, audit, the budget settlement, and the review or dead letter the step ends in),
so a redelivered message neither adds a second blackboard entry nor counts its tokens twice,
and no crash can leave half of a step's outcome written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from messages.status import StepStatus
from workers import keys, scripts
from workers.audit_events import AuditStream, utc_iso
from workers.budget import HoldArgs, Settlement, hold_args, settle_args
from workers.deadletters import DEAD_LETTER_MAXLEN, DeadLetter
from workers.reviews import REVIEW_TTL

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

_BEGIN_STEP = scripts.load("begin_step")
_RECORD_STEP = scripts.load("record_step")


@dataclass(frozen=True)
class StepRecord:
    """What one agent did with one input message; stored beside the messages for debugging."""

    task_id: str
    input_message_id: str
    agent: str
    status: str
    """`ok`, `error` or `skipped` (messages.status.StepStatus)."""
    message: dict[str, Any]
    """The output AgentMessage (result, delegation or error) as a dict."""
    queue: str | None = None
    worker: str | None = None
    priority: int | None = None
    """Celery message priority the step was delivered with (0 is served first)."""
    model: str | None = None
    attempts: int = 0
    """Model calls answered for this step (the stricter validation retry included)."""
    retries: int = 0
    """Transport retries (429, 529, 5xx, timeouts) across those calls."""
    retry_log: list[dict[str, Any]] = field(default_factory=list)
    input_message: dict[str, Any] | None = None
    """The message the step worked on, so lineage survives even where a producer made it."""
    branches: list[dict[str, str]] | None = None
    """For a chord's body: each branch's name and whether it answered (ok) or failed."""
    usage: dict[str, int] = field(default_factory=dict)
    cost_micro_usd: int = 0
    latency_ms: float = 0.0
    raw_output: str | None = None
    """Unparsed model output, kept beside the parsed payload."""
    summary: str = ""
    """One line on what came out (see `digest`), for status views and review lists."""
    started_at: str = ""
    finished_at: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """A tool loop's calls in order: {turn, tool_use_id, name, input, output, error,
    duration_ms, replayed}; `output` or `error` is None (workers/tool_loop.py ToolLog)."""
    turns: list[dict[str, Any]] = field(default_factory=list)
    """A tool loop's model turns: {turn, model, stop_reason, usage, cost_micro_usd,
    latency_ms, replayed}; a replayed turn was paid by an earlier delivery, counted here once."""
    batched_calls: list[dict[str, Any]] = field(default_factory=list)
    """The step's model calls made through the Message Batches API, billed at the batch price:
    {attempt, batch_id, custom_id} (workers/batching.py)."""

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies every nested dict first, for nothing here.
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StepRecord:
        return cls(**json.loads(raw))


SUMMARY_FIELDS = ("summary", "recommendation", "answer", "verdict", "consensus", "text", "title")
SUMMARY_LIMIT = 200


def digest(message: dict[str, Any]) -> str:
    """A one-line summary of an output message, without another model call."""
    payload = message.get("payload") or {}
    kind = message.get("message_type")
    if kind == "error":
        text = f"error {payload.get('code')}: {payload.get('message')}"
    elif kind == "task":
        text = f"delegated to {message.get('recipient')}"
    else:
        strings = {k: v for k, v in payload.items() if isinstance(v, str) and v}
        first = next((strings[k] for k in SUMMARY_FIELDS if k in strings), None)
        text = first or next(iter(strings.values()), "") or json.dumps(payload)[:SUMMARY_LIMIT]
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Begin:
    """What begin_step found: go ahead (all None), or the reason not to run the step."""

    done: StepRecord | None = None
    """This input was handled already (a redelivery): its record stands."""
    stopped: str | None = None
    """The task ended (its budget ran out): steps not yet started are skipped."""
    loop_of: str | None = None
    """The id of an earlier message that brought the same input to the same agent."""
    refused: list[Any] | None = None
    """The step runs, but its first call's hold did not fit the budget (see budget.refusal)."""


class StepStore:
    """Begins and records steps; safe to share between threads."""

    def __init__(self, client: redis.Redis, ttl: int, audit: AuditStream) -> None:
        self._redis = client
        self._ttl = ttl
        self._audit = audit

    def begin_step(
        self,
        task_id: str,
        input_message_id: str,
        agent: str,
        fingerprint: str = "",
        *,
        hold: HoldArgs | Sequence[Any] = (),
    ) -> Begin:
        """Mark the task (and agent) running, or say why this step must not run.

        `hold` (TaskBudget.reserve_args) holds the first call's worst case in the same round
        trip."""
        answer = _BEGIN_STEP(
            self._redis,
            keys={
                "task": keys.task(task_id),
                "board": keys.board(task_id),
                "audit": keys.AUDIT,
                "seen": keys.seen(task_id),
                "budget": keys.budget(task_id),
            },
            args={
                "now": utc_iso(),
                "ttl": self._ttl,
                "message_id": input_message_id,
                "agent": agent,
                "task_id": task_id,
                "fingerprint": fingerprint,
                **self._audit.args(),
                **hold_args(tuple(hold)),
            },
        )
        if answer is None:
            return Begin()
        kind, *rest = cast(list[Any], answer)
        if kind == b"refused":
            return Begin(refused=rest)
        value = rest[0].decode()
        if kind == b"handled":
            return Begin(done=StepRecord.from_json(value))
        if kind == b"loop":
            return Begin(loop_of=value)
        return Begin(stopped=value)

    def record_step(
        self,
        record: StepRecord,
        *,
        final_status: str | None,
        settle: Settlement | None = None,
        review: bool = False,
        dead_letter: DeadLetter | None = None,
    ) -> StepRecord:
        """Store the step once; on a duplicate, return the record that was stored first.

        In the same call: `settle` applies the step's last budget settlement; `review` queues
        the task for a human (when its status is now needs_review); `dead_letter` writes the
        step's dead letter. The last two happen only when this call stored the record: a
        duplicate's outcome was the first delivery's to write. A duplicate still adds what its
        calls cost to the task's totals (the provider billed them) and counts in `duplicates`.
        """
        payload = record.message.get("payload") or {}
        code = str(payload.get("code", "")) if record.status != StepStatus.OK else ""
        answer = _RECORD_STEP(
            self._redis,
            keys={
                "board": keys.board(record.task_id),
                "task": keys.task(record.task_id),
                "trace": keys.trace(record.task_id),
                "audit": keys.AUDIT,
                "metrics": keys.METRICS,
                "budget": keys.budget(record.task_id),
                "reviews": keys.REVIEWS,
                "dead_letters": keys.DEAD_LETTERS,
            },
            args={
                "message_id": record.input_message_id,
                "record": record.to_json(),
                "ttl": self._ttl,
                "now": utc_iso(),
                "final_status": final_status or "",
                "finished_at": record.finished_at,
                "final_message_id": record.message.get("message_id", ""),
                "task_id": record.task_id,
                "agent": record.agent,
                "model": record.model or "",
                "step_status": record.status,
                "error_code": code,
                "attempts": record.attempts,
                "retries": record.retries,
                "latency_seconds": record.latency_ms / 1000,
                "cost_micro_usd": record.cost_micro_usd,
                **{name: int(record.usage.get(name, 0)) for name in USAGE_FIELDS},
                **self._audit.args(),
                **settle_args(settle),
                "review": "1" if review else "",
                "review_score": time.time(),
                "review_ttl": REVIEW_TTL,
                "dead_letter": dead_letter.encode(record.task_id) if dead_letter else "",
                "dead_letter_maxlen": DEAD_LETTER_MAXLEN,
            },
        )
        return record if answer is None else StepRecord.from_json(cast(bytes, answer))

    def was_started(self, task_id: str, message_id: str) -> bool:
        """Has any agent begun (or finished) this message? For replays of a delegation."""
        if self._redis.hexists(keys.board(task_id), message_id):
            return True
        started = cast(list[bytes], self._redis.hvals(keys.seen(task_id)))
        return message_id.encode() in started
