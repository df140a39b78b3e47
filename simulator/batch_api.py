"""The Message Batches endpoints, and `/_sim/batches` to steer how batches behave."""

from __future__ import annotations

from typing import Any

from simulator.base import BaseHandler, api_errors
from simulator.errors import ApiError


class BatchesHandler(BaseHandler):
    """POST /v1/messages/batches creates a batch; GET lists them, newest first."""

    @api_errors
    def post(self) -> None:
        self.authenticate()
        base_url = f"{self.request.protocol}://{self.request.host}"
        self.finish_json(self.sim.batches.create(self.json_body(), base_url).to_json())

    @api_errors
    def get(self) -> None:
        self.authenticate()
        try:
            limit = int(self.get_query_argument("limit", "20"))
        except ValueError:
            message = "limit: Input should be a valid integer"
            raise ApiError(400, "invalid_request_error", message) from None
        before_id = self.get_query_argument("before_id", None)
        after_id = self.get_query_argument("after_id", None)
        self.finish_json(self.sim.batches.page(limit, before_id, after_id))


class BatchHandler(BaseHandler):
    """GET /v1/messages/batches/{id} polls a batch; DELETE removes an ended one."""

    @api_errors
    def get(self, batch_id: str) -> None:
        self.authenticate()
        self.finish_json(self.sim.batches.get(batch_id).to_json())

    @api_errors
    def delete(self, batch_id: str) -> None:
        self.authenticate()
        self.finish_json(self.sim.batches.delete(batch_id))


class BatchCancelHandler(BaseHandler):
    @api_errors
    def post(self, batch_id: str) -> None:
        self.authenticate()
        self.finish_json(self.sim.batches.cancel(batch_id).to_json())


class BatchResultsHandler(BaseHandler):
    """The results_url: one JSON line per request, once the batch has ended."""

    @api_errors
    def get(self, batch_id: str) -> None:
        self.authenticate()
        batch = self.sim.batches.get(batch_id)
        if batch.processing_status != "ended":
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message batch {batch_id} has not finished processing; its results are "
                "available once processing_status is ended",
            )
        self.set_header("content-type", "application/binary")
        self.finish(batch.results_jsonl())


class BatchControlHandler(BaseHandler):
    """GET the batch plan; POST changes the settings given (delay, error_rate, expire_rate,
    errored, expired, seed); DELETE goes back to the configured plan."""

    def get(self) -> None:
        self.finish_json(self.sim.batches.plan.report())

    @api_errors
    def post(self) -> None:
        data: dict[str, Any] = self.json_body()
        try:
            self.sim.batches.plan.update(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, "invalid_request_error", f"batch plan: {exc}") from None
        self.finish_json(self.sim.batches.plan.report())

    def delete(self) -> None:
        self.sim.batches.plan.reset()
        self.finish_json(self.sim.batches.plan.report())
