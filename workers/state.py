"""Task state in Redis: status, blackboard of step records, trace stream, dead letters.

Each step lands in one atomic Lua call keyed by the input message id, so a redelivered message
neither adds a second blackboard entry nor counts its tokens twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from workers import keys
from workers.guards import BUDGET_LUA, NO_SETTLEMENT, Settlement

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
    summary: str = ""
    """One line on what came out (see `digest`), for status views and review lists."""
    started_at: str = ""
    finished_at: str = ""

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


_AUDIT = """
local function audit(stream, maxlen, task_key, task_id, kind, fields)
  if maxlen == '0' then return end
  local flat = redis.call('HGETALL', task_key)
  local snapshot = {}
  for i = 1, #flat, 2 do
    if flat[i] ~= 'root_message' then snapshot[flat[i]] = flat[i + 1] end
  end
  local args = {stream, 'MAXLEN', '~', maxlen, '*', 'kind', kind, 'task_id', task_id,
                'task', cjson.encode(snapshot)}
  for _, v in ipairs(fields) do table.insert(args, v) end
  redis.call('XADD', unpack(args))
end
"""
"""Appends one event to the audit stream with a snapshot of the task hash, in the same atomic
call as the change it describes: audit costs no extra round trip on the hot path."""

_RECORD_STEP = (
    _AUDIT
    + BUDGET_LUA
    + """
if ARGV[21] ~= '' then
  settle_budget(KEYS[6], ARGV[21], tonumber(ARGV[22]), tonumber(ARGV[23]), ARGV[24], ARGV[3])
end
local running = 'running:' .. ARGV[13]
if tonumber(redis.call('HGET', KEYS[2], running) or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], running, -1)
end
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
if ARGV[7] ~= '' and redis.call('HGET', KEYS[2], 'status') ~= 'budget_exceeded' then
  redis.call('HSET', KEYS[2], 'status', ARGV[7], 'finished_at', ARGV[8],
             'final_message_id', ARGV[9], 'updated_at', ARGV[8])
end
redis.call('XADD', KEYS[3], '*', 'record', ARGV[2])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
audit(KEYS[4], ARGV[15], KEYS[2], ARGV[14], 'step',
      {'agent', ARGV[13], 'at', ARGV[8], 'record', ARGV[2]})
local m, labels = KEYS[5], ARGV[13] .. '|' .. ARGV[16]
redis.call('HINCRBY', m, 'steps|' .. labels .. '|' .. ARGV[17], 1)
redis.call('HINCRBY', m, 'calls|' .. labels, ARGV[18])
redis.call('HINCRBY', m, 'input_tokens|' .. labels, ARGV[5])
redis.call('HINCRBY', m, 'output_tokens|' .. labels, ARGV[6])
redis.call('HINCRBY', m, 'cache_creation_input_tokens|' .. labels, ARGV[10])
redis.call('HINCRBY', m, 'cache_read_input_tokens|' .. labels, ARGV[11])
redis.call('HINCRBY', m, 'cost_micro_usd|' .. labels, ARGV[4])
redis.call('HINCRBY', m, 'retries|' .. labels, ARGV[12])
if ARGV[19] ~= '' then redis.call('HINCRBY', m, 'errors|' .. ARGV[13] .. '|' .. ARGV[19], 1) end
local seconds = tonumber(ARGV[20])
redis.call('HINCRBYFLOAT', m, 'latency_sum|' .. labels, seconds)
redis.call('HINCRBY', m, 'latency_count|' .. labels, 1)
for _, le in ipairs({'0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '120'}) do
  if seconds <= tonumber(le) then
    redis.call('HINCRBY', m, 'latency_bucket|' .. labels .. '|' .. le, 1)
  end
end
return false
"""
)

_BEGIN_STEP = (
    _AUDIT
    + BUDGET_LUA
    + """
local done = redis.call('HGET', KEYS[2], ARGV[3])
if done then return {'done', done} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'budget_exceeded' then
  local queued = 'queued:' .. ARGV[4]
  if tonumber(redis.call('HGET', KEYS[1], queued) or '0') > 0 then
    redis.call('HINCRBY', KEYS[1], queued, -1)
  end
  return {'stopped', status}
end
if ARGV[7] ~= '' then
  local first = redis.call('HGET', KEYS[4], ARGV[7])
  if first and first ~= ARGV[3] then return {'loop', first} end
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
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
audit(KEYS[3], ARGV[6], KEYS[1], ARGV[5], 'started',
      {'agent', ARGV[4], 'at', ARGV[1], 'message_id', ARGV[3]})
if ARGV[8] ~= '' then
  local refused = reserve_budget(KEYS[1], KEYS[5], ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]),
                                 ARGV[11], ARGV[12], ARGV[13])
  if refused then return {'refused', unpack(refused)} end
end
return false
"""
)
"""Marks a step running, unless its input was handled (`done`), the task's budget stopped it
(`stopped`), or the same agent already saw the same input under another message (`loop`);
then holds its first call's worst case against the budget (`refused` when it does not fit)."""


_DECIDE_REVIEW = (
    _AUDIT
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'needs_review' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[6], 'review_decision', ARGV[2], 'review_note', ARGV[3],
           'reviewer', ARGV[4], 'reviewed_at', ARGV[5], 'updated_at', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
audit(KEYS[3], ARGV[7], KEYS[1], ARGV[1], 'review_decided',
      {'at', ARGV[5], 'status', ARGV[6], 'detail',
       cjson.encode({decision = ARGV[2], note = ARGV[3], reviewer = ARGV[4]})})
return 1
"""
)


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
    """The step runs, but its first call's hold did not fit the budget (see guards.refusal)."""


def utc_iso() -> str:
    return datetime.now(UTC).isoformat()


def _flat(mapping: dict[str, Any]) -> list[Any]:
    return [part for pair in mapping.items() for part in pair]


class TaskState:
    """Reads and writes one Redis's task state; safe to share between threads."""

    def __init__(
        self, client: redis.Redis, ttl: int, *, audit: bool = True, audit_maxlen: int = 1_000_000
    ) -> None:
        self._redis = client
        self._ttl = ttl
        self._audit_maxlen = audit_maxlen if audit else 0
        """0 switches the audit stream off (the Lua helper's convention)."""
        self._record_step = client.register_script(_RECORD_STEP)
        self._begin_step = client.register_script(_BEGIN_STEP)
        self._decide = client.register_script(_DECIDE_REVIEW)

    # -- producer side ------------------------------------------------------------------------

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
        commands += self._audit_commands(
            task_id,
            "submitted",
            at=now,
            status="submitted",
            task={"status": "submitted", "pattern": pattern, "submitted_at": now},
            detail={"root_message": root_message},
        )
        return commands

    def _audit(
        self,
        pipe: redis.client.Pipeline,
        task_id: str,
        kind: str,
        *,
        at: str,
        task: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        **fields: str,
    ) -> None:
        """Queue one audit event on a pipeline (the Lua scripts write theirs themselves)."""
        for command in self._audit_commands(
            task_id, kind, at=at, task=task, detail=detail, **fields
        ):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]

    def _audit_commands(
        self,
        task_id: str,
        kind: str,
        *,
        at: str,
        task: dict[str, Any] | None = None,
        detail: dict[str, Any] | None = None,
        **fields: str,
    ) -> list[tuple[Any, ...]]:
        """The XADD of one audit event, or nothing when the audit stream is off."""
        if not self._audit_maxlen:
            return []
        entry = {"kind": kind, "task_id": task_id, "at": at, **fields}
        if task is not None:
            entry["task"] = json.dumps(task)
        if detail is not None:
            entry["detail"] = json.dumps(detail, default=repr)
        return [("XADD", keys.AUDIT, "MAXLEN", "~", self._audit_maxlen, "*", *_flat(entry))]

    def plan(self, task_id: str, agents: dict[str, int]) -> None:
        """Count steps a workflow will run, per agent, before they start (for progress)."""
        if not agents:
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for agent, count in agents.items():
                pipe.hincrby(keys.task(task_id), f"queued:{agent}", count)
            pipe.execute()

    # -- worker side --------------------------------------------------------------------------

    def begin_step(
        self,
        task_id: str,
        input_message_id: str,
        agent: str,
        fingerprint: str = "",
        *,
        hold: Sequence[Any] = (),
    ) -> Begin:
        """Mark the task (and agent) running, or say why this step must not run.

        `hold` (TaskBudget.reserve_args) holds the first call's worst case in the same round
        trip."""
        answer = self._begin_step(
            keys=[
                keys.task(task_id),
                keys.board(task_id),
                keys.AUDIT,
                keys.seen(task_id),
                keys.budget(task_id),
            ],
            args=[
                utc_iso(),
                self._ttl,
                input_message_id,
                agent,
                task_id,
                self._audit_maxlen,
                fingerprint,
                *(hold or [""]),
            ],
        )
        if answer is None:
            return Begin()
        parts = cast(list[Any], answer)
        if parts[0] == b"refused":
            return Begin(refused=parts[1:])
        kind, value = (part.decode() for part in parts)
        if kind == "done":
            return Begin(done=StepRecord.from_json(value))
        if kind == "loop":
            return Begin(loop_of=value)
        return Begin(stopped=value)

    def record_step(
        self,
        record: StepRecord,
        *,
        final_status: str | None,
        settle: Settlement | None = None,
    ) -> StepRecord:
        """Store the step once; on a duplicate, return the record that was stored first.

        `settle` applies the step's last budget settlement in the same round trip (the budget
        hash lives as long as the task state: both CHORUS_STATE_TTL)."""
        existing = self._record_step(
            keys=[
                keys.board(record.task_id),
                keys.task(record.task_id),
                keys.trace(record.task_id),
                keys.AUDIT,
                keys.METRICS,
                keys.budget(record.task_id),
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
                record.task_id,
                self._audit_maxlen,
                record.model or "",
                record.status,
                record.attempts,
                str(record.message.get("payload", {}).get("code", ""))
                if record.status != "ok"
                else "",
                record.latency_ms / 1000,
                *(settle.args() if settle is not None else NO_SETTLEMENT),
            ],
        )
        return record if existing is None else StepRecord.from_json(cast(bytes, existing))

    def dead_letter(
        self,
        *,
        task_id: str,
        agent: str,
        code: str,
        error: str,
        body: object,
        options: dict[str, Any] | None = None,
    ) -> None:
        text = body if isinstance(body, str) else json.dumps(body, default=repr)
        now = utc_iso()
        letter = {
            "task_id": task_id,
            "agent": agent,
            "code": code,
            "error": error,
            "body": text[:DEAD_LETTER_BODY_LIMIT],
            "at": now,
        }
        if options is not None and len(text) <= DEAD_LETTER_BODY_LIMIT:
            letter["options"] = json.dumps(options)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(keys.DEAD_LETTERS, letter, maxlen=DEAD_LETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
            self._audit(
                pipe, task_id, "dead_letter", at=now, agent=agent, status=code, detail=letter
            )
            pipe.execute()

    def was_started(self, task_id: str, message_id: str) -> bool:
        """Has any agent begun (or finished) this message? For replays of a delegation."""
        if self._redis.hexists(keys.board(task_id), message_id):
            return True
        started = cast(list[bytes], self._redis.hvals(keys.seen(task_id)))
        return message_id.encode() in started

    # -- human review --------------------------------------------------------------------------

    def open_review(self, task_id: str) -> None:
        """Queue the task for a human and keep its state until someone decides."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.REVIEWS, {task_id: time.time()})
            for key in (keys.task(task_id), keys.board(task_id), keys.trace(task_id)):
                pipe.expire(key, REVIEW_TTL)
            self._audit(pipe, task_id, "review_opened", at=utc_iso(), status="needs_review")
            pipe.execute()

    def decide_review(self, task_id: str, *, approve: bool, note: str, reviewer: str) -> bool:
        """Record the decision on the task; False when the task is not waiting for review."""
        decided = self._decide(
            keys=[keys.task(task_id), keys.REVIEWS, keys.AUDIT],
            args=[
                task_id,
                "approved" if approve else "rejected",
                note,
                reviewer,
                utc_iso(),
                "done" if approve else "rejected",
                self._audit_maxlen,
            ],
        )
        return bool(decided)

    def pending_reviews(self) -> list[tuple[str, float]]:
        entries = cast(
            list[tuple[bytes, float]], self._redis.zrange(keys.REVIEWS, 0, -1, withscores=True)
        )
        return [(task_id.decode(), score) for task_id, score in entries]

    # -- readers ------------------------------------------------------------------------------

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

    def totals(self, task_id: str) -> dict[str, str]:
        """The task's status and totals without the rest of its hash (the root message can be
        half a megabyte); empty when the task is unknown or expired."""
        values = cast(list[bytes | None], self._redis.hmget(keys.task(task_id), self.TOTALS))
        return {k: v.decode() for k, v in zip(self.TOTALS, values, strict=True) if v is not None}

    def task_info(self, task_id: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.task(task_id)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def steps(self, task_id: str) -> list[StepRecord]:
        """Step records in completion order (from the trace stream)."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], self._redis.xrange(keys.trace(task_id))
        )
        return [StepRecord.from_json(fields[b"record"]) for _, fields in entries]
