"""The books of a run: what every task became, and whether any step or model call counts twice.

A task is lost when it never reaches a finished status with nothing left running, or its
result never reaches the producer. A task is doubled when one input message left two step
records (board, trace and the `steps` total disagree), when its totals are not its steps'
sums, or when it counts tokens the provider never billed. Two deliveries of one message that
both called the model (the record script's `duplicates`) are `paid_twice`: billed twice and
counted twice, so the cost still equals the bill; only a crash makes those. The provider's
side comes from the simulator's ledger (calls are tagged with the task id).

A call the provider answered to a worker that was killed before it could record the answer is
billed but on no task: `cut_off`. Only a crash makes those, at most one per message in flight.
A task that ended with a `running:`/`queued:` counter still above zero once the fleet is quiet
has `leaked` it: its progress shows a step in flight that never ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, cast
from urllib.parse import quote

import redis

from dispatcher.dispatcher import TaskHandle
from messages.status import FINISHED, TaskStatus
from simulator.ledger import USAGE_FIELDS
from tests.conftest import sim_request
from workers import keys
from workers.app import ChorusApp

COUNTERS = ("running:", "queued:")


@dataclass
class Row:
    """One pattern's line of a chaos table."""

    tasks: int = 0
    done: int = 0
    failed: int = 0
    review: int = 0
    lost: int = 0
    doubled: int = 0
    paid_twice: int = 0
    cut_off: int = 0
    leaked: int = 0

    def add(self, other: Row) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def finished(info: Mapping[bytes, bytes]) -> bool:
    return bytes(info.get(b"status", b"")).decode() in FINISHED


def counters_up(info: Mapping[str, Any]) -> list[str]:
    """`running:`/`queued:` counters above zero: steps the task still counts in flight."""
    return [f"{k}={v}" for k, v in info.items() if k.startswith(COUNTERS) and int(v) > 0]


def unfinished(app: ChorusApp, client: redis.Redis, task_ids: Iterable[str]) -> list[str]:
    """Tasks not ended yet, or whose result the producer could not fetch yet."""
    ids = list(task_ids)
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hgetall(keys.task(task_id))
            pipe.exists(app.backend.get_key_for_task(task_id))
        answers = pipe.execute()
    infos, results = answers[0::2], answers[1::2]
    return [t for t, i, r in zip(ids, infos, results, strict=True) if not (r and finished(i))]


def why_unfinished(app: ChorusApp, client: redis.Redis, task_id: str) -> str:
    """What a lost task looks like: its status, the counters still up, its result."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.task(task_id)))
    info = {k.decode(): v.decode() for k, v in raw.items()}
    up = counters_up(info)
    result = bool(client.exists(app.backend.get_key_for_task(task_id)))
    return f"{task_id}: {info.get('status')} {' '.join(up)} result={'yes' if result else 'no'}"


def wait_all(
    app: ChorusApp, client: redis.Redis, task_ids: Iterable[str], timeout: float
) -> list[str]:
    """Poll until every task ended with its result stored; returns the ones that never did."""
    pending = list(task_ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = unfinished(app, client, pending)
        if pending:
            time.sleep(0.2)
    return pending


def billed(simulator_url: str, user_id: str = "") -> dict[str, dict[str, int]]:
    """The simulator's ledger by task (or for one, `user_id` URL-quoted): calls and each
    billed token kind."""
    by_task: dict[str, dict[str, int]] = {}
    query = f"?user_id={user_id}" if user_id else ""
    for call in sim_request(f"{simulator_url}/_sim/ledger{query}")["calls"]:
        row = by_task.setdefault(str(call["user_id"]), dict.fromkeys(("calls", *USAGE_FIELDS), 0))
        row["calls"] += 1
        for name in USAGE_FIELDS:
            row[name] += int(call["usage"].get(name, 0))
    return by_task


def audit_task(
    handle: TaskHandle,
    client: redis.Redis,
    bill: Mapping[str, int] | None,
    why: list[str] | None = None,
) -> Row:
    """One task's row (tasks=1); `bill` is the ledger's line for it (None: nothing billed).
    What made it doubled or cut off goes to `why`."""
    row = Row(tasks=1)
    info: dict[str, Any] = handle.status()
    status = info.get("status")
    if status == TaskStatus.DONE:
        row.done = 1
    elif status == TaskStatus.NEEDS_REVIEW:
        row.review = 1
    else:
        row.failed = 1
    if counters_up(info):
        row.leaked = 1
    reasons = doubling(handle, client, info, bill)
    if reasons:
        row.doubled = 1
    duplicates = int(info.get("duplicates", 0))
    if duplicates:
        # Two deliveries of one message ran at once (a dead worker's message came back while
        # its replayed hand-off was sent again) and both called the model: paid twice, and
        # counted twice, so the task's cost still equals the provider's bill.
        row.paid_twice = duplicates
    steps = handle.trace()
    counted = {name: int(info.get(name, 0)) for name in USAGE_FIELDS}
    paid = {name: int((bill or {}).get(name, 0)) for name in USAGE_FIELDS}
    if any(paid[name] > counted[name] for name in USAGE_FIELDS):
        recorded_calls = sum(s.attempts for s in steps) + int(info.get("duplicates", 0))
        row.cut_off = max(1, int((bill or {}).get("calls", 0)) - recorded_calls)
        reasons.append(f"billed {paid}, counted {counted}")
    if why is not None and reasons:
        kind = "doubled" if row.doubled else "cut off"
        why.append(f"{kind} {handle.task_id} ({info.get('pattern')}): {'; '.join(reasons)}")
    return row


def doubling(
    handle: TaskHandle, client: redis.Redis, info: Mapping[str, Any], bill: Mapping[str, int] | None
) -> list[str]:
    """Why a task counts something twice (empty: it does not)."""
    reasons = []
    steps = handle.trace()
    board = int(client.hlen(keys.board(handle.task_id)))
    trace = int(client.xlen(keys.trace(handle.task_id)))
    inputs = len({s.input_message_id for s in steps})
    counts = (inputs, len(steps), board, trace, int(info.get("steps", 0)))
    if len(set(counts)) != 1:
        reasons.append(
            "inputs, records, board, trace, steps total: {}, {}, {}, {}, {}".format(*counts)
        )
    spent = sum(s.cost_micro_usd for s in steps) + int(info.get("duplicate_cost_micro_usd", 0))
    if int(info.get("cost_micro_usd", 0)) != spent:
        reasons.append(f"cost_micro_usd {info.get('cost_micro_usd')} != steps' {spent}")
    for name in USAGE_FIELDS:
        counted, paid = int(info.get(name, 0)), int((bill or {}).get(name, 0))
        if counted > paid:
            reasons.append(f"{name}: counted {counted}, billed {paid}")
    return reasons


def table(title: str, rows: Mapping[str, Row], notes: Iterable[str] = ()) -> list[str]:
    """The lines `make chaos` prints for one fault."""
    names = [f.name for f in fields(Row)]
    lines = [title, f"  {'pattern':<12}" + "".join(f"{n:>11}" for n in names)]
    total = Row()
    for pattern, row in rows.items():
        total.add(row)
        lines.append(f"  {pattern:<12}" + "".join(f"{getattr(row, n):>11}" for n in names))
    lines.append(f"  {'all':<12}" + "".join(f"{getattr(total, n):>11}" for n in names))
    lines.extend(f"  {note}" for note in notes)
    return lines


def billed_for(simulator_url: str, task_id: str) -> dict[str, int]:
    """The simulator's ledger line for one task (see `billed`)."""
    return billed(simulator_url, quote(task_id)).get(task_id, {})
