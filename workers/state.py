"""Task state in Redis: status, blackboard of step records, trace stream, dead letters.

Each step lands in one atomic Lua call keyed by the input message id, so a redelivered message
neither adds a second blackboard entry nor counts its tokens twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from workers import keys

DEAD_LETTER_MAXLEN = 100_000
DEAD_LETTER_BODY_LIMIT = 64_000

REVIEW_TTL = 30 * 24 * 3600
"""Seconds a task waiting for a human keeps its state, whatever CHORUS_STATE_TTL says."""


@dataclass(frozen=True)
class StepRecord:
    """What one agent did with one input message; stored beside the messages for debugging."""

    task_id: str
    input_message_id: str
    agent: str
    status: str
    """`ok` or `error`."""
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
    started_at: str = ""
    finished_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StepRecord:
        return cls(**json.loads(raw))


_RECORD_STEP = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return existing end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'cost_micro_usd', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'input_tokens', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'output_tokens', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'cache_creation_input_tokens', ARGV[10])
redis.call('HINCRBY', KEYS[2], 'cache_read_input_tokens', ARGV[11])
redis.call('HINCRBY', KEYS[2], 'retries', ARGV[12])
redis.call('HINCRBY', KEYS[2], 'steps', 1)
local running = 'running:' .. ARGV[13]
if tonumber(redis.call('HGET', KEYS[2], running) or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], running, -1)
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'status', ARGV[7], 'finished_at', ARGV[8],
             'final_message_id', ARGV[9], 'updated_at', ARGV[8])
end
redis.call('XADD', KEYS[3], '*', 'record', ARGV[2])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return false
"""

_BEGIN_STEP = """
local done = redis.call('HGET', KEYS[2], ARGV[3])
if done then return done end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'done' and status ~= 'failed' and status ~= 'needs_review' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[1])
  redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
end
local queued = 'queued:' .. ARGV[4]
if tonumber(redis.call('HGET', KEYS[1], queued) or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], queued, -1)
end
redis.call('HINCRBY', KEYS[1], 'running:' .. ARGV[4], 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return false
"""


_DECIDE_REVIEW = """
if redis.call('HGET', KEYS[1], 'status') ~= 'needs_review' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[6], 'review_decision', ARGV[2], 'review_note', ARGV[3],
           'reviewer', ARGV[4], 'reviewed_at', ARGV[5], 'updated_at', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def utc_iso() -> str:
    return datetime.now(UTC).isoformat()


class TaskState:
    """Reads and writes one Redis's task state; safe to share between threads."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self._redis = client
        self._ttl = ttl
        self._record_step = client.register_script(_RECORD_STEP)
        self._begin_step = client.register_script(_BEGIN_STEP)
        self._decide = client.register_script(_DECIDE_REVIEW)

    # -- producer side ------------------------------------------------------------------------

    def submit(self, task_id: str, *, pattern: str, root_message: dict[str, Any]) -> None:
        now = utc_iso()
        key = keys.task(task_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "status": "submitted",
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
                },
            )
            pipe.expire(key, self._ttl)
            pipe.execute()

    def plan(self, task_id: str, agents: dict[str, int]) -> None:
        """Count steps a workflow will run, per agent, before they start (for progress)."""
        if not agents:
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for agent, count in agents.items():
                pipe.hincrby(keys.task(task_id), f"queued:{agent}", count)
            pipe.execute()

    # -- worker side --------------------------------------------------------------------------

    def begin_step(self, task_id: str, input_message_id: str, agent: str) -> StepRecord | None:
        """Mark the task (and agent) running, or return the record if this input was handled."""
        done = self._begin_step(
            keys=[keys.task(task_id), keys.board(task_id)],
            args=[utc_iso(), self._ttl, input_message_id, agent],
        )
        return None if done is None else StepRecord.from_json(cast(bytes, done))

    def record_step(self, record: StepRecord, *, final_status: str | None) -> StepRecord:
        """Store the step once; on a duplicate, return the record that was stored first."""
        existing = self._record_step(
            keys=[
                keys.board(record.task_id),
                keys.task(record.task_id),
                keys.trace(record.task_id),
            ],
            args=[
                record.input_message_id,
                record.to_json(),
                self._ttl,
                record.cost_micro_usd,
                record.usage.get("input_tokens", 0),
                record.usage.get("output_tokens", 0),
                final_status or "",
                record.finished_at,
                record.message.get("message_id", ""),
                record.usage.get("cache_creation_input_tokens", 0),
                record.usage.get("cache_read_input_tokens", 0),
                record.retries,
                record.agent,
            ],
        )
        return record if existing is None else StepRecord.from_json(cast(bytes, existing))

    def dead_letter(self, *, task_id: str, agent: str, code: str, error: str, body: object) -> None:
        text = body if isinstance(body, str) else json.dumps(body, default=repr)
        self._redis.xadd(
            keys.DEAD_LETTERS,
            {
                "task_id": task_id,
                "agent": agent,
                "code": code,
                "error": error,
                "body": text[:DEAD_LETTER_BODY_LIMIT],
                "at": utc_iso(),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )

    # -- human review --------------------------------------------------------------------------

    def open_review(self, task_id: str) -> None:
        """Queue the task for a human and keep its state until someone decides."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.REVIEWS, {task_id: time.time()})
            for key in (keys.task(task_id), keys.board(task_id), keys.trace(task_id)):
                pipe.expire(key, REVIEW_TTL)
            pipe.execute()

    def decide_review(self, task_id: str, *, approve: bool, note: str, reviewer: str) -> bool:
        """Record the decision on the task; False when the task is not waiting for review."""
        decided = self._decide(
            keys=[keys.task(task_id), keys.REVIEWS],
            args=[
                task_id,
                "approved" if approve else "rejected",
                note,
                reviewer,
                utc_iso(),
                "done" if approve else "rejected",
            ],
        )
        return bool(decided)

    def pending_reviews(self) -> list[tuple[str, float]]:
        entries = cast(
            list[tuple[bytes, float]], self._redis.zrange(keys.REVIEWS, 0, -1, withscores=True)
        )
        return [(task_id.decode(), score) for task_id, score in entries]

    # -- readers ------------------------------------------------------------------------------

    def task_info(self, task_id: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.task(task_id)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def steps(self, task_id: str) -> list[StepRecord]:
        """Step records in completion order (from the trace stream)."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], self._redis.xrange(keys.trace(task_id))
        )
        return [StepRecord.from_json(fields[b"record"]) for _, fields in entries]
