"""`chorus auditor`: drains the Redis audit stream into SQL in batches, off the agents' hot path.

Agents only append to a stream (inside the Lua call that records their step). Auditors read it
through one consumer group, insert a batch in one transaction, then acknowledge and delete it.
An auditor that dies mid-batch leaves its entries pending; another claims them after
`claim_idle` seconds, and the idempotent insert makes the replay harmless.
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
from workers.audit_store import AuditEvent, AuditStore, parse_time, sortable_event_id

log = logging.getLogger("chorus.auditor")

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
        for entry_id, raw in entries:
            try:
                good.append(decode(entry_id, raw))
            except (KeyError, ValueError) as exc:  # never block the stream on one bad entry
                log.error("dropping malformed audit entry %s: %s", entry_id.decode(), exc)
        self._store.write(good)
        ids = [entry_id for entry_id, _ in entries]
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.AUDIT, keys.AUDITORS, *ids)
            pipe.xdel(keys.AUDIT, *ids)
            pipe.execute()
        return len(entries)

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
