"""The fleet's batcher: gathers parked requests per model into Message Batches, polls them, and
hands each result back to its step by custom_id.

It runs inside every worker (`BatcherStep`, a Celery bootstep like the transit reaper), and one
leads at a time: the leader holds a Redis lock it renews on every pass (batch_lead.lua); when
it dies, the lock expires and another worker's batcher takes over within
CHORUS_BATCH_LOCK_SECONDS. No extra service to deploy, and a fleet with any live worker has a
batcher.

Nothing is lost or sent twice across a crash, because each step is written before the next:
1. `batch_claim.lua` moves a model's oldest pending requests into a batch record (`creating`,
   with its custom_ids), atomically;
2. the batch is created at the provider, then the record gets its batch id (`created`);
3. when the batch has ended, each result is stored with its step and the step's resume queued
   (batch_deliver.lua), the resumes are published, and the record is removed.
A leader that finds a `creating` record older than the lock's lifetime (its creator died, or
the create call's answer was lost) lists the provider's batches created since: a batch with as
many requests is awaited until it has ended and adopted when its results carry exactly the
record's custom_ids; only when none does is the batch created again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import redis
from celery import Celery, bootsteps

from workers import batch_results, keys, scripts
from workers.settings import Settings

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger(__name__)

_LEAD = scripts.load("batch_lead")
_CLAIM = scripts.load("batch_claim")

CLOCK_SKEW = 300.0
"""Seconds of difference allowed between our clock and the provider's `created_at`."""


@dataclass
class BatchRecord:
    """One batch as the batcher made it (keys.BATCHES)."""

    key: str
    model: str
    state: str
    """`creating` (claimed, maybe not yet created) or `created` (batch_id known)."""
    custom_ids: list[str]
    creating_at: float
    batch_id: str = ""
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> BatchRecord:
        data = json.loads(raw)
        ids = data.get("custom_ids") or []
        data["custom_ids"] = list(ids) if isinstance(ids, list) else []  # cjson: {} for []
        return cls(**data)


class Batcher:
    """One process's batcher; `run_once` does one pass when this process leads."""

    def __init__(
        self, client: redis.Redis, sdk: anthropic.Anthropic, app: Celery, settings: Settings
    ):
        self._redis = client
        self._sdk = sdk
        self._app = app
        self._settings = settings
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._polled = -float("inf")

    # -- leadership -------------------------------------------------------------------------

    def lead(self) -> int:
        """2: just took the lead; 1: leads already; 0: another batcher leads."""
        ttl_ms = int(self._settings.batch_lock_seconds * 1000)
        return int(
            _LEAD(
                self._redis,
                keys={"lock": keys.BATCH_LOCK},
                args={"token": self.token, "ttl_ms": ttl_ms},
            )
        )

    def resign(self) -> None:
        """Give the lead up on a clean stop, so another worker takes over at once."""
        if self._redis.get(keys.BATCH_LOCK) == self.token.encode():
            self._redis.delete(keys.BATCH_LOCK)

    # -- one pass ---------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> bool:
        """Publish waiting resumes, settle unsure batches, send full or old pending requests,
        poll the batches in flight. False when another batcher leads."""
        if not self.lead():
            return False
        now = time.time() if now is None else now
        batch_results.publish_outbox(self._redis, self._app)
        records = self.records()
        for record in records:
            if (
                record.state == "creating"
                and now - record.creating_at > self._settings.batch_lock_seconds
            ):
                self._recover(record, now)
        self._gather(now)
        tick = time.monotonic()
        if tick - self._polled >= self._settings.batch_poll_seconds:
            self._polled = tick
            for record in self.records():
                if record.state == "created" and self.lead():
                    self._poll(record)
        return True

    def records(self) -> list[BatchRecord]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.BATCHES))
        return sorted((BatchRecord.parse(v) for v in raw.values()), key=lambda r: r.creating_at)

    def _save(self, record: BatchRecord) -> None:
        self._redis.hset(keys.BATCHES, record.key, json.dumps(asdict(record)))

    # -- gathering and creating ------------------------------------------------------------

    def _gather(self, now: float) -> None:
        settings = self._settings
        for raw_model in cast(set[bytes], self._redis.smembers(keys.BATCH_MODELS)):
            model = raw_model.decode()
            pending = keys.batch_pending(model)
            while True:
                count = int(self._redis.zcard(pending))
                if count == 0:
                    break
                oldest = cast(
                    list[tuple[bytes, float]], self._redis.zrange(pending, 0, 0, withscores=True)
                )
                age = now - oldest[0][1] if oldest else 0.0
                if count < settings.batch_max_requests and age < settings.batch_max_age_seconds:
                    break
                if not self.lead():
                    return
                taken = self.claim(model, now)
                if taken is None:
                    break
                self._create(taken)

    def claim(self, model: str, now: float) -> BatchRecord | None:
        """Step 1: the model's oldest pending requests into a `creating` record."""
        key = f"lb_{uuid.uuid4().hex}"
        ids = cast(
            list[bytes],
            _CLAIM(
                self._redis,
                keys={
                    "pending": keys.batch_pending(model),
                    "requests": keys.BATCH_REQUESTS,
                    "batches": keys.BATCHES,
                },
                args={
                    "key": key,
                    "model": model,
                    "count": self._settings.batch_max_requests,
                    "now": now,
                },
            ),
        )
        if not ids:
            return None
        return BatchRecord(key, model, "creating", [i.decode() for i in ids], now)

    def _create(self, record: BatchRecord) -> None:
        """Step 2: create the batch, then record its id. A refused batch (4xx) ends its
        requests `errored`; an unsure answer (timeout, 5xx) leaves the record to `_recover`."""
        import anthropic

        raw = cast(list[bytes | None], self._redis.hmget(keys.BATCH_REQUESTS, record.custom_ids))
        requests = [
            {"custom_id": entry["custom_id"], "params": entry["params"]}
            for entry in (json.loads(r) for r in raw if r is not None)
        ]
        if not requests:
            self._redis.hdel(keys.BATCHES, record.key)
            return
        try:
            batch = self._sdk.messages.batches.create(requests=cast(Any, requests))
        except anthropic.APIStatusError as exc:
            if 400 <= exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                log.error("batch of %d %s requests refused: %s", len(requests), record.model, exc)
                self._finish(
                    record,
                    [
                        batch_results.errored(cid, "", "invalid_request_error", str(exc.message))
                        for cid in record.custom_ids
                    ],
                )
                return
            log.warning("batch create unsure (%s); will look for it before sending again", exc)
            return
        except anthropic.APIConnectionError as exc:
            log.warning("batch create unsure (%s); will look for it before sending again", exc)
            return
        record.batch_id, record.state, record.created_at = batch.id, "created", time.time()
        self._save(record)
        log.info("batch %s: %d %s requests", batch.id, len(requests), record.model)

    # -- polling and results -----------------------------------------------------------------

    def _poll(self, record: BatchRecord) -> None:
        """Step 3: once the batch has ended, hand every result back and resume the steps."""
        import anthropic

        try:
            batch = self._sdk.messages.batches.retrieve(record.batch_id)
        except anthropic.NotFoundError:
            self._finish(
                record,
                [
                    batch_results.errored(
                        cid, record.batch_id, "not_found_error", "batch not found"
                    )
                    for cid in record.custom_ids
                ],
            )
            return
        if batch.processing_status != "ended":
            return
        results = {}
        for line in self._sdk.messages.batches.results(record.batch_id):
            results[line.custom_id] = batch_results.encode(
                line.custom_id, record.batch_id, line.result
            )
        for cid in record.custom_ids:
            results.setdefault(
                cid,
                batch_results.errored(cid, record.batch_id, "api_error", "no result in the batch"),
            )
        self._finish(record, [results[cid] for cid in record.custom_ids])

    def _finish(self, record: BatchRecord, results: list[dict[str, Any]]) -> None:
        ttl = batch_results.parked_ttl(self._settings)
        batch_results.deliver(self._redis, results, ttl)
        batch_results.publish_outbox(self._redis, self._app)
        self._redis.hdel(keys.BATCHES, record.key)

    # -- recovery ----------------------------------------------------------------------------

    def _recover(self, record: BatchRecord, now: float) -> None:
        """A `creating` record: adopt the batch made for it if there is one, else create it.

        The provider shows a batch's custom_ids only in its results, so a batch with the same
        number of requests created since the record is awaited until it has ended."""
        known = {r.batch_id for r in self.records() if r.batch_id}
        wanted = set(record.custom_ids)
        since = record.creating_at - CLOCK_SKEW
        undecided = False
        for batch in self._sdk.messages.batches.list(limit=100):
            if batch.created_at.timestamp() < since:
                break
            counts = batch.request_counts
            total = (
                counts.processing
                + counts.succeeded
                + counts.errored
                + counts.canceled
                + counts.expired
            )
            if batch.id in known or total != len(wanted):
                continue
            if batch.processing_status != "ended":
                undecided = True
                continue
            ids = {line.custom_id for line in self._sdk.messages.batches.results(batch.id)}
            if ids == wanted:
                log.warning("adopting batch %s made for %s before a crash", batch.id, record.key)
                record.batch_id, record.state, record.created_at = batch.id, "created", now
                self._save(record)
                return
        if undecided:
            return  # a batch of that size is still in progress: it may be this one
        log.warning("batch %s was never created; creating it now", record.key)
        self._create(record)


class BatcherThread(threading.Thread):
    """Offers to lead every tick; leads until it stops or loses the lock."""

    def __init__(self, batcher: Batcher, interval: float) -> None:
        super().__init__(name="chorus-batcher", daemon=True)
        self.batcher = batcher
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.batcher.run_once()
            except redis.RedisError as exc:  # Redis restarting: the next tick tries again
                log.info("batcher pass skipped: %s", exc)
            except Exception:
                log.exception("batcher pass failed")
        with contextlib.suppress(redis.RedisError):
            self.batcher.resign()


class BatcherStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs a batcher in every Chorus worker (one leads); CHORUS_BATCHER=0 switches it off."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: BatcherThread | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        settings: Settings = app.settings
        if not settings.batcher:
            return
        runtime = app.runtime()
        batcher = Batcher(runtime.redis, runtime.claude.sdk, app, settings)
        tick = min(
            settings.batch_poll_seconds,
            settings.batch_max_age_seconds,
            settings.batch_lock_seconds / 3,
        )
        self.thread = BatcherThread(batcher, max(0.05, tick))
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stopped.set()
            self.thread.join(5)
