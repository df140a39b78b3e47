"""Messages in transit: closing the one window in which kombu's Redis transport loses a message.

kombu takes a message off its queue with BRPOP and only afterwards records it in its `unacked`
hash. A worker killed between the two (or a Redis that stops between them) loses the message:
it is in no queue and in no `unacked` hash, so the visibility timeout cannot bring it back, and
its task waits forever (celery/kombu#305; other Redis queues close it with BRPOPLPUSH, which
kombu cannot use across priority lists).

Chorus closes it with a ledger. Every agent message is written to the ledger in the same
pipeline that publishes it, ahead of the LPUSH; the worker that receives it removes it in the
same MULTI/EXEC that records it in `unacked` (workers/transport.py), so at every instant
the message is in its queue, in the ledger or in `unacked`. A reaper in every worker looks at
entries older than `grace` seconds: one still in its queue or in `unacked` is on its way; one
in neither on two looks at least `confirm` seconds apart was lost in the window, and goes back
to the head of its queue, byte for byte. A message that reached a worker after all is handled
once: every step is idempotent by message id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis
from celery import bootsteps
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from workers import keys, scripts

log = logging.getLogger(__name__)

AGENT_TASK_PREFIX = "chorus.agent."
MAX_RESTORES = 5
"""A message lost this many times is dropped with an error log (it never is, in practice)."""

UNACKED = kombu_redis.Channel.unacked_key

dumps = cast(Callable[[Any], str], kombu_json.dumps)
"""kombu's own JSON encoding, so a message written back is byte for byte the one it wrote."""
loads = cast(Callable[[str | bytes], Any], kombu_json.loads)


def tracked(message: dict[str, Any]) -> str | None:
    """The Celery task id of an agent message worth tracking (JSON, a Chorus agent task)."""
    headers = message.get("headers") or {}
    task = headers.get("task")
    if message.get("content-type") != "application/json" or not isinstance(task, str):
        return None
    task_id = headers.get("id")
    return task_id if task.startswith(AGENT_TASK_PREFIX) and isinstance(task_id, str) else None


def ledger_commands(queue_key: str, message: dict[str, Any], element: str) -> list[tuple[Any, ...]]:
    """Redis commands that record `element` (about to be LPUSHed onto `queue_key`).

    They must run before the LPUSH: a worker may take the message the instant it lands.
    """
    task_id = tracked(message)
    if task_id is None:
        return []
    entry = json.dumps({"key": queue_key, "element": element})
    return [
        ("hset", keys.TRANSIT, task_id, entry),
        ("zadd", keys.TRANSIT_INDEX, {task_id: time.time()}),
    ]


def received(pipe: redis.client.Pipeline, task_id: str) -> None:
    """Queue the ledger removal of a message that reached a worker (and kombu's `unacked`)."""
    pipe.hdel(keys.TRANSIT, task_id)
    pipe.zrem(keys.TRANSIT_INDEX, task_id)
    pipe.hdel(keys.TRANSIT_SUSPECTS, task_id)
    pipe.hdel(keys.TRANSIT_RESTORES, task_id)


def redelivered_variant(element: str) -> str:
    """The same message as kombu writes it back after a visibility-timeout restore."""
    payload = loads(element)
    try:
        payload["headers"]["redelivered"] = True
        payload["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        return element
    return dumps(payload)


_LOOK = scripts.load("transit_look")


class Reaper:
    """Finds messages lost between BRPOP and `unacked` and puts them back on their queue."""

    def __init__(
        self, client: redis.Redis, *, grace: float, confirm: float, batch: int = 200
    ) -> None:
        self._redis = client
        self.grace = grace
        self.confirm = confirm
        self.batch = batch

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """One pass over the oldest entries; returns how many were seen in each state."""
        now = time.time() if now is None else now
        counts = {"gone": 0, "on_its_way": 0, "suspect": 0, "restored": 0, "dropped": 0}
        names = list(counts)
        ids = cast(
            list[bytes],
            self._redis.zrangebyscore(
                keys.TRANSIT_INDEX, "-inf", now - self.grace, start=0, num=self.batch
            ),
        )
        if not ids:
            return counts
        entries = cast(list[bytes | None], self._redis.hmget(keys.TRANSIT, ids))
        for raw_id, entry in zip(ids, entries, strict=True):
            task_id = raw_id.decode()
            if entry is None:
                self._redis.zrem(keys.TRANSIT_INDEX, task_id)
                counts["gone"] += 1
                continue
            if self._restores(task_id) >= MAX_RESTORES:
                self._drop(task_id, entry)
                counts["dropped"] += 1
                continue
            state = self._look_at(task_id, entry, now)
            counts[names[state]] += 1
            if state == 3:
                log.warning(
                    "message of Celery task %s was lost between the broker and a worker; "
                    "put it back on its queue",
                    task_id,
                )
        return counts

    def _look_at(self, task_id: str, entry: bytes, now: float) -> int:
        parsed = json.loads(entry)
        element = parsed["element"]
        tag = (loads(element).get("properties") or {}).get("delivery_tag", "")
        state = _LOOK(
            self._redis,
            keys={
                "ledger": keys.TRANSIT,
                "index": keys.TRANSIT_INDEX,
                "suspects": keys.TRANSIT_SUSPECTS,
                "restores": keys.TRANSIT_RESTORES,
                "unacked": UNACKED,
                "queue": parsed["key"],
            },
            args={
                "task_id": task_id,
                "entry": entry,
                "element": element,
                "redelivered": redelivered_variant(element),
                "delivery_tag": tag,
                "now": now,
                "confirm": self.confirm,
            },
        )
        return int(state)

    def _restores(self, task_id: str) -> int:
        return int(self._redis.hget(keys.TRANSIT_RESTORES, task_id) or 0)

    def _drop(self, task_id: str, entry: bytes) -> None:
        log.error(
            "message of Celery task %s was lost %d times in transit; giving up on it: %s",
            task_id,
            MAX_RESTORES,
            json.loads(entry)["key"],
        )
        with self._redis.pipeline(transaction=False) as pipe:
            received(pipe, task_id)
            pipe.execute()


class ReaperThread(threading.Thread):
    """Sweeps every `interval` seconds; one worker of the fleet at a time (a Redis lock)."""

    def __init__(self, reaper: Reaper, interval: float) -> None:
        super().__init__(name="chorus-transit-reaper", daemon=True)
        self.reaper = reaper
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        client = self.reaper._redis
        while not self.stopped.wait(self.interval):
            try:
                if client.set(keys.TRANSIT_LOCK, "1", nx=True, px=int(self.interval * 1000)):
                    self.reaper.sweep()
            except redis.RedisError as exc:  # Redis restarting: the next pass tries again
                log.info("transit sweep skipped: %s", exc)
            except Exception:
                log.exception("transit sweep failed")


class ReaperStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the reaper inside every Chorus worker; Celery starts and stops it with the worker."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: ReaperThread | None = None

    def start(self, worker: Any) -> None:
        settings = worker.app.settings
        if settings.transit_check_seconds <= 0:
            return
        grace = settings.transit_check_seconds
        reaper = Reaper(worker.app.runtime().redis, grace=grace, confirm=grace / 3)
        self.thread = ReaperThread(reaper, interval=grace / 3)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stopped.set()
