"""`chorus auditor`: drains the Redis audit stream into SQL in batches, off the agents' hot path.

Agents only append to a stream (inside the Lua call that records their step). Auditors read it
through one consumer group, insert a batch in one transaction, then acknowledge and delete it.
An auditor that dies mid-batch leaves its entries pending; another claims them after
`claim_idle` seconds, and the idempotent insert makes the replay harmless. An entry that cannot
become a row, or a row SQL refuses, goes to the dead-letter stream (code `audit_row`) with the
entry and the reason, so it never holds its batch back.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import cast

import redis

from workers import keys
from workers.audit_events import AuditStream, utc_iso
from workers.audit_store import AuditEvent, AuditStore, parse_time, sortable_event_id
from workers.deadletters import DeadLetter, DeadLetterWriter

log = logging.getLogger("chorus.auditor")

AUDIT_ROW = "audit_row"
"""Dead-letter code of an audit entry that could not be written to SQL."""

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True)
class AuditorOptions:
    batch: int = 500
    """Entries per SQL transaction: larger batches write faster, smaller ones land sooner."""
    block_ms: int = 1000
    """How long one read waits for new entries."""
    claim_idle: float = 60.0
    """Seconds after which another auditor's unacknowledged entries are taken over."""
    linger: float = 0.5
    """Seconds to let events gather after a short batch: one transaction per half second, not
    one per event, keeps the auditor's CPU and fsyncs away from the agents sharing the host."""


def decode(entry_id: bytes, raw: dict[bytes, bytes]) -> AuditEvent:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    snapshot = fields.pop("task", None)
    return AuditEvent(
        event_id=sortable_event_id(entry_id.decode()),
        kind=fields.pop("kind", "unknown"),
        task_id=fields.pop("task_id", ""),
        at=parse_time(fields.pop("at")),
        task=json.loads(snapshot) if snapshot else None,
        fields=fields,
    )


class Auditor:
    def __init__(
        self,
        client: redis.Redis,
        store: AuditStore,
        options: AuditorOptions | None = None,
        *,
        consumer: str | None = None,
    ) -> None:
        self._redis = client
        self._store = store
        self._options = options or AuditorOptions()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._letters = DeadLetterWriter(client, AuditStream(maxlen=0))
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self._redis.xgroup_create(keys.AUDIT, keys.AUDITORS, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run_once(self, *, block: bool = True) -> int:
        """Move one batch into SQL; returns how many entries it handled."""
        entries = self._claim_stale() or self._read_new(block)
        if not entries:
            return 0
        good: list[AuditEvent] = []
        raw_of: dict[str, dict[bytes, bytes]] = {}
        for entry_id, raw in entries:
            try:
                event = decode(entry_id, raw)
            except (KeyError, ValueError) as exc:  # never block the stream on one bad entry
                self._set_apart(entry_id.decode(), raw, exc)
                continue
            good.append(event)
            raw_of[event.event_id] = raw
        written = self._store.write_or_isolate(good)
        for event, error in written.failed:
            self._set_apart(event.event_id, raw_of[event.event_id], error, task_id=event.task_id)
        ids = [entry_id for entry_id, _ in entries]
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.AUDIT, keys.AUDITORS, *ids)
            pipe.xdel(keys.AUDIT, *ids)
            pipe.execute()
        return len(entries)

    def _set_apart(
        self, event_id: str, raw: dict[bytes, bytes], exc: Exception, *, task_id: str = ""
    ) -> None:
        """A dead letter (no audit event: it is about the audit trail) with the whole entry."""
        fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
        task_id = task_id or fields.get("task_id", "") or "unknown"
        error = f"audit entry {event_id} could not be written to SQL: {type(exc).__name__}: {exc}"
        log.error("%s; it is in the dead-letter stream (code %s)", error, AUDIT_ROW)
        letter = DeadLetter(agent="auditor", code=AUDIT_ROW, error=error[:2000], body=fields)
        self._letters.write(task_id, letter, at=utc_iso(), audit=False)

    def _read_new(self, block: bool) -> list[Entry]:
        answer = self._redis.xreadgroup(
            keys.AUDITORS,
            self.consumer,
            {keys.AUDIT: ">"},
            count=self._options.batch,
            block=self._options.block_ms if block else None,
        )
        if not answer:
            return []
        return cast(list[Entry], answer[0][1])  # type: ignore[index]

    def _claim_stale(self) -> list[Entry]:
        answer = self._redis.xautoclaim(
            keys.AUDIT,
            keys.AUDITORS,
            self.consumer,
            min_idle_time=int(self._options.claim_idle * 1000),
            start_id="0-0",
            count=self._options.batch,
        )
        return [e for e in cast(list[Entry], answer[1]) if e[1]]

    def drain(self) -> int:
        """Write everything already in the stream (tests, shutdown); returns entries handled."""
        total = 0
        while handled := self.run_once(block=False):
            total += handled
        return total

    def run(self, stop: threading.Event) -> None:
        url = self._store.engine.url.render_as_string(hide_password=True)
        log.info("auditor %s writing to %s", self.consumer, url)
        while not stop.is_set():
            try:
                if self.run_once() < self._options.batch:
                    stop.wait(self._options.linger)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                stop.wait(1.0)
            except Exception:
                log.exception("audit batch failed; it stays pending and is retried")
                stop.wait(1.0)
        self.drain()
