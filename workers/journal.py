"""A step's tool loop, journaled in Redis as it goes, so a redelivered step resumes from it.

Each answered model turn is written with its budget settlement in one atomic call
(journal_turn.lua), each tool outcome as soon as its call ends. A delivery that finds the
journal (the worker before it died) replays the journaled turns without calling the model and
reuses the journaled outcomes without running the tools again; only the turn or the calls that
were in flight are made again. The journal lives in one hash per step (keys.journal), beside
the task's other keys, and expires with them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from workers import keys, scripts
from workers.budget import Settlement, settle_args
from workers.claude import Reply
from workers.models import Usage
from workers.retry import RetryEvent
from workers.tool_exec import ToolOutcome
from workers.tool_metrics import count_call

_TURN = scripts.load("journal_turn")
_RESUME = scripts.load("journal_resume")

TURN = "turn:"
TOOL = "tool:"
PARK = "park"
DECISION = "decision:"


@dataclass(frozen=True)
class Decision:
    """A reviewer's answer to one tool call that needed approval."""

    approved: bool
    note: str = ""
    reviewer: str = ""
    at: str = ""


@dataclass(frozen=True)
class JournalState:
    """What an earlier delivery of the step left: replay these instead of redoing them."""

    turns: dict[int, Reply] = field(default_factory=dict)
    outcomes: dict[str, tuple[int, ToolOutcome]] = field(default_factory=dict)
    """tool_use_id -> (turn, outcome)."""
    park: dict[str, Any] | None = None
    """The pending approval of a parked step (workers/approvals.py), or None."""
    decisions: dict[str, Decision] = field(default_factory=dict)
    """tool_use_id -> the reviewer's decision."""


class Journal:
    """The journal of one step (task id + input message id); safe to share between threads."""

    def __init__(self, client: redis.Redis, task_id: str, message_id: str, ttl: int) -> None:
        self._redis = client
        self.task_id = task_id
        self.message_id = message_id
        self.key = keys.journal(task_id, message_id)
        self._ttl = ttl

    def resume(self) -> JournalState:
        """Read the journal, releasing the budget holds a dead delivery left (one round trip)."""
        flat = cast(
            list[bytes],
            _RESUME(
                self._redis,
                keys={"journal": self.key, "budget": keys.budget(self.task_id)},
                args={
                    "prefix": f"r:{self.message_id}:",
                    "keep": f"r:{self.message_id}:1",
                    "ttl": self._ttl,
                },
            ),
        )
        return decode_state(
            {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        )

    def save_turn(self, turn: int, reply: Reply, settlement: Settlement | None) -> Reply:
        """Journal turn `turn` and settle what it cost; the reply to go on with (the one a
        concurrent delivery journaled first, if any)."""
        settle = settle_args(settlement)
        earlier = _TURN(
            self._redis,
            keys={"journal": self.key, "budget": keys.budget(self.task_id)},
            args={
                "field": f"{TURN}{turn}",
                "entry": encode_reply(reply),
                "ttl": self._ttl,
                **settle,
            },
        )
        return reply if earlier is None else decode_reply(cast(bytes, earlier).decode())

    def save_outcome(self, turn: int, outcome: ToolOutcome, *, agent: str) -> None:
        """Journal a finished tool call (its result or its error) and count it in the fleet's
        metrics in the same transaction: a call counts once per time it really ran."""
        entry = json.dumps({"turn": turn, **asdict(outcome)}, separators=(",", ":"))
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, f"{TOOL}{outcome.tool_use_id}", entry)
            pipe.expire(self.key, self._ttl)
            seconds = outcome.duration_ms / 1000
            count_call(pipe, agent, outcome.name, seconds=seconds, failed=outcome.is_error)
            pipe.execute()


def encode_reply(reply: Reply) -> str:
    body = {
        "model": reply.model,
        "raw_text": reply.raw_text,
        "stop_reason": reply.stop_reason,
        "usage": asdict(reply.usage),
        "latency_ms": reply.latency_ms,
        "request_id": reply.request_id,
        "retries": [asdict(event) for event in reply.retries],
        "content": list(reply.content),
    }
    return json.dumps(body, separators=(",", ":"))


def decode_reply(raw: str) -> Reply:
    body = json.loads(raw)
    text = body["raw_text"]
    try:
        data: object | None = json.loads(text)
    except ValueError:
        data = None
    return Reply(
        model=body["model"],
        raw_text=text,
        data=data,
        stop_reason=body["stop_reason"],
        usage=Usage(**body["usage"]),
        latency_ms=body["latency_ms"],
        request_id=body["request_id"],
        retries=tuple(RetryEvent(**event) for event in body["retries"]),
        content=tuple(body["content"]),
    )


def decode_outcome(raw: str) -> tuple[int, ToolOutcome]:
    body = json.loads(raw)
    turn = int(body.pop("turn"))
    return turn, ToolOutcome(**body)


def decode_state(fields: dict[str, str]) -> JournalState:
    state = JournalState()
    for name, value in fields.items():
        if name.startswith(TURN):
            state.turns[int(name.removeprefix(TURN))] = decode_reply(value)
        elif name.startswith(TOOL):
            state.outcomes[name.removeprefix(TOOL)] = decode_outcome(value)
        elif name.startswith(DECISION):
            state.decisions[name.removeprefix(DECISION)] = Decision(**json.loads(value))
    park = fields.get(PARK)
    if park is None:
        return state
    return JournalState(state.turns, state.outcomes, json.loads(park), state.decisions)
