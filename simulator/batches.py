"""Message Batches: a batch of Messages requests processed asynchronously, as the API does.

A batch is `in_progress` from creation until its delay has passed; then its requests are
answered one by one on the server's event loop (yielding between them, so the loop keeps
serving) and it `ended`, its results at `results_url`. Request counts stay `processing`
until the whole batch ends, as documented. Cancelling makes it `canceling`; requests not yet
answered then end `canceled`. As with the API, only the batch envelope (requests, custom_id,
params being an object) is checked at creation: each request's params are validated when it is
processed, and a request that fails ends `errored` with the 400 that /v1/messages would give.

Per-request errors and expiry come from the batch plan (`simulator.batch_plan`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from simulator.batch_plan import BatchPlan, errored
from simulator.errors import ApiError
from simulator.ids import new_id

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
EXPIRY = timedelta(hours=24)
"""A batch that has not ended 24 hours after creation expires."""


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    params: dict[str, Any]


@dataclass
class Batch:
    id: str
    requests: list[BatchRequest]
    base_url: str
    """Scheme and host the batch was created through: its results_url is absolute."""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    processing_status: str = "in_progress"
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """custom_id -> the `result` object of its results line."""
    canceled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def results_url(self) -> str | None:
        if self.processing_status != "ended":
            return None
        return f"{self.base_url}/v1/messages/batches/{self.id}/results"

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.processing_status != "ended":
            counts["processing"] = len(self.requests)
            return counts
        for result in self.results.values():
            counts[str(result["type"])] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.counts(),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + EXPIRY),
            "ended_at": rfc3339(self.ended_at),
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": self.results_url,
        }

    def results_jsonl(self) -> str:
        lines = [
            json.dumps({"custom_id": r.custom_id, "result": self.results[r.custom_id]})
            for r in self.requests
        ]
        return "".join(f"{line}\n" for line in lines)


Runner = Callable[[Batch, BatchRequest], dict[str, Any]]
"""Answers one batched request with a Message (raises ApiError when it is invalid)."""


class BatchStore:
    """Every batch of this simulator, oldest first; lives on the server's event loop."""

    def __init__(self, plan: BatchPlan, run: Runner) -> None:
        self.plan = plan
        self._run = run
        self._batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def create(self, body: dict[str, Any], base_url: str) -> Batch:
        batch = Batch(new_id("msgbatch_sim"), _requests(body.get("requests")), base_url)
        self._batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._process(batch, self.plan.delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return batch

    def get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"Message batch {batch_id} not found")
        return batch

    def page(self, limit: int, before_id: str | None, after_id: str | None) -> dict[str, Any]:
        """Newest first, as the API lists them; before_id / after_id are cursors."""
        if not 1 <= limit <= 1000:
            raise _invalid("limit: Input should be between 1 and 1000")
        ordered = list(reversed(self._batches.values()))
        ids = [b.id for b in ordered]
        for name, cursor in (("after_id", after_id), ("before_id", before_id)):
            if cursor is not None and cursor not in ids:
                raise _invalid(f"{name}: no message batch {cursor}")
        if after_id is not None:
            start = ids.index(after_id) + 1
            data, has_more = ordered[start : start + limit], start + limit < len(ordered)
        elif before_id is not None:
            end = ids.index(before_id)
            data, has_more = ordered[max(0, end - limit) : end], end - limit > 0
        else:
            data, has_more = ordered[:limit], limit < len(ordered)
        return {
            "data": [b.to_json() for b in data],
            "has_more": has_more,
            "first_id": data[0].id if data else None,
            "last_id": data[-1].id if data else None,
        }

    def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if batch.processing_status == "ended":
            raise _invalid(f"Message batch {batch_id} has already ended and cannot be canceled")
        if batch.processing_status == "in_progress":
            batch.processing_status = "canceling"
            batch.cancel_initiated_at = datetime.now(UTC)
            batch.canceled.set()
        return batch

    def delete(self, batch_id: str) -> dict[str, Any]:
        batch = self.get(batch_id)
        if batch.processing_status != "ended":
            raise _invalid(
                f"Message batch {batch_id} is still processing; cancel it and wait until it "
                "has ended before deleting it"
            )
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    async def _process(self, batch: Batch, delay: float) -> None:
        with contextlib.suppress(TimeoutError):  # the delay, cut short by a cancel
            await asyncio.wait_for(batch.canceled.wait(), timeout=delay)
        for request in batch.requests:
            if batch.canceled.is_set():
                batch.results[request.custom_id] = {"type": "canceled"}
                continue
            batch.results[request.custom_id] = self._answer(batch, request)
            await asyncio.sleep(0)  # let the loop serve other requests between answers
        batch.processing_status = "ended"
        batch.ended_at = datetime.now(UTC)

    def _answer(self, batch: Batch, request: BatchRequest) -> dict[str, Any]:
        decided = self.plan.outcome(request)
        if decided is not None:
            return decided
        try:
            return {"type": "succeeded", "message": self._run(batch, request)}
        except ApiError as error:
            return errored(error.kind, str(error))
        except Exception as exc:  # a simulator bug must not leave the batch in progress
            return errored("api_error", f"simulator error: {exc!r}")


def _requests(raw: object) -> list[BatchRequest]:
    """The batch envelope, checked as the API checks it at creation."""
    if not isinstance(raw, list):
        raise _invalid("requests: Field required")
    if not raw:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(raw) > MAX_REQUESTS:
        raise _invalid(f"requests: a Message Batch holds at most {MAX_REQUESTS:,} requests")
    out: list[BatchRequest] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "custom_id" not in item:
            raise _invalid(f"requests.{i}.custom_id: Field required")
        custom_id = item["custom_id"]
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            raise _invalid(
                f"requests.{i}.custom_id: String should match pattern '{CUSTOM_ID.pattern}'"
            )
        if custom_id in seen:
            raise _invalid(
                f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}; each request in a "
                "Message Batch needs a unique custom_id"
            )
        if not isinstance(item.get("params"), dict):
            raise _invalid(f"requests.{i}.params: Input should be a valid dictionary")
        seen.add(custom_id)
        out.append(BatchRequest(custom_id, item["params"]))
    return out
