"""Batch results handed back to their steps, by custom_id, and the steps resumed.

Each result is stored in its step's batch hash with the signature that resumes the step put
in the outbox, in one atomic call (batch_deliver.lua); the batcher then publishes the outbox
and removes each entry it published. A batcher killed between the two publishes the rest on
takeover; one killed between a publish and its removal publishes that one resume again, and
the step's second run replays its record (every step is idempotent by message id).
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import redis
from celery import Celery

from workers import keys, scripts
from workers.settings import Settings

log = logging.getLogger(__name__)

_DELIVER = scripts.load("batch_deliver")

BATCH_WAIT_SECONDS = 25 * 3600
"""A batch ends within 24 hours (it expires then): a parked task's state outlives that."""


def parked_ttl(settings: Settings) -> int:
    """How long a parked step's state (its task, board, budget, batch hash) is kept."""
    return max(settings.state_ttl, BATCH_WAIT_SECONDS)


def encode(custom_id: str, batch_id: str, result: Any) -> dict[str, Any]:
    """A result line of the SDK (`MessageBatchResult`) as the step reads it back."""
    kind = str(result.type)
    body: dict[str, Any] = {"type": kind, "custom_id": custom_id, "batch_id": batch_id}
    if kind == "succeeded":
        body["message"] = result.message.model_dump(mode="json")
    elif kind == "errored":
        body["error"] = result.error.model_dump(mode="json")
    return body


def errored(custom_id: str, batch_id: str, kind: str, message: str) -> dict[str, Any]:
    """An errored result made here: the batch could not be created, or lost its results."""
    error = {"type": "error", "error": {"type": kind, "message": message}}
    return {"type": "errored", "custom_id": custom_id, "batch_id": batch_id, "error": error}


def deliver(client: redis.Redis, results: list[dict[str, Any]], ttl: int) -> int:
    """Store each result with its step and queue its resume; returns how many were new."""
    if not results:
        return 0
    ids = [r["custom_id"] for r in results]
    entries = cast(list[bytes | None], client.hmget(keys.BATCH_REQUESTS, ids))
    new = 0
    for result, raw in zip(results, entries, strict=True):
        if raw is None:
            continue  # delivered before (its request left the waiting set with it)
        entry = json.loads(raw)
        new += int(
            _DELIVER(
                client,
                keys={
                    "step": keys.batch_step(entry["task_id"], entry["message_id"]),
                    "task": keys.task(entry["task_id"]),
                    "requests": keys.BATCH_REQUESTS,
                    "outbox": keys.BATCH_OUTBOX,
                },
                args={
                    "custom_id": result["custom_id"],
                    "attempt": int(entry["attempt"]),
                    "result": json.dumps(result, separators=(",", ":")),
                    "ttl": ttl,
                },
            )
        )
    return new


def publish_outbox(client: redis.Redis, app: Celery) -> int:
    """Publish every resume waiting in the outbox, removing each once it is sent."""
    waiting = cast(dict[bytes, bytes], client.hgetall(keys.BATCH_OUTBOX))
    for custom_id, signature in waiting.items():
        app.signature(json.loads(signature)).apply_async()
        client.hdel(keys.BATCH_OUTBOX, custom_id)
    if waiting:
        log.info("resumed %d batched steps", len(waiting))
    return len(waiting)
