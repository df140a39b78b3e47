"""What every handler shares: the simulator's state, and the API's auth and error shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import tornado.web

from simulator.answers import respond
from simulator.batch_plan import BatchPlan
from simulator.batches import Batch, BatchRequest, BatchStore
from simulator.cache import PromptCache
from simulator.config import SimulatorConfig
from simulator.conversation import check_request
from simulator.errors import ApiError
from simulator.faults import FaultBook, FaultPlan
from simulator.ids import new_id
from simulator.ledger import Charge, Ledger, billed_usage
from simulator.limits import Limits, RateLimiter
from simulator.scripts import ScriptBook
from simulator.tools import ToolPolicy


@dataclass
class SimState:
    """Everything the handlers share; lives on the server's event loop thread."""

    config: SimulatorConfig
    scripts: ScriptBook = field(default_factory=ScriptBook)
    ledger: Ledger = field(default_factory=Ledger)

    def __post_init__(self) -> None:
        config = self.config
        self.faults = FaultBook(
            FaultPlan(
                rates=dict(config.fault_rates),
                schedule=list(config.fault_schedule),
                seed=config.seed,
                retry_after=config.retry_after,
                hang_seconds=config.hang_seconds,
            )
        )
        self.cache = PromptCache(config.min_cache_tokens)
        self.limiter = RateLimiter(Limits(rpm=config.rpm, itpm=config.itpm, otpm=config.otpm))
        self.tools = self.default_tools()
        plan = BatchPlan(
            config.batch_delay, config.batch_error_rate, config.batch_expire_rate, config.seed
        )
        self.batches = BatchStore(plan, self.answer_batched)

    def default_tools(self) -> ToolPolicy:
        config = self.config
        return ToolPolicy(config.tool_turns, config.parallel_tools, config.tool_preamble)

    def check(self, body: dict[str, Any]) -> None:
        """What /v1/messages refuses before any fault or rate limit applies."""
        check_request(body, needs_max_tokens=True)
        model = str(body["model"])
        forced = (body.get("tool_choice") or {}).get("type") == "tool"
        if forced and model in self.config.no_forced_tool_models:
            raise ApiError(
                400,
                "invalid_request_error",
                f"tool_choice: forcing a tool is not supported with {model}; "
                "use output_config.format for structured output",
            )

    def answer(self, body: dict[str, Any], fault: str | None) -> dict[str, Any]:
        return respond(body, self.scripts, self.cache, fault, self.tools)

    def bill(
        self,
        body: dict[str, Any],
        answer: dict[str, Any],
        *,
        batch_id: str | None = None,
        custom_id: str | None = None,
    ) -> None:
        metadata = body.get("metadata") or {}
        user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
        self.ledger.bill(
            Charge(
                answer["id"],
                str(body["model"]),
                user_id,
                billed_usage(answer["usage"]),
                batch=batch_id is not None,
                batch_id=batch_id,
                custom_id=custom_id,
            )
        )

    def answer_batched(self, batch: Batch, request: BatchRequest) -> dict[str, Any]:
        """One request of a batch: validated and answered like /v1/messages (one turn, no
        fault plan, no rate limit), billed as batched."""
        body = request.params
        self.check(body)
        answer = self.answer(body, None)
        answer["usage"]["service_tier"] = "batch"
        self.bill(body, answer, batch_id=batch.id, custom_id=request.custom_id)
        return answer


class BaseHandler(tornado.web.RequestHandler):
    sim: SimState

    def initialize(self, sim: SimState) -> None:
        self.sim = sim

    def set_default_headers(self) -> None:
        self.set_header("request-id", new_id("req_sim"))
        self.set_header("x-chorus-simulated", "true")

    def send_error_body(self, error: ApiError) -> None:
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("content-type", "application/json")
        self.finish({"type": "error", "error": {"type": error.kind, "message": str(error)}})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's own errors (405, 500) in the API's error shape too."""
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(status_code, "api_error")
        self.set_header("content-type", "application/json")
        message = self._reason or "error"
        self.finish({"type": "error", "error": {"type": kind, "message": message}})

    def finish_json(self, data: Any) -> None:
        self.set_header("content-type", "application/json")
        self.finish(json.dumps(data))

    def authenticate(self) -> None:
        key = self.request.headers.get("x-api-key", "")
        bearer = self.request.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:].strip()
        if not key:
            raise ApiError(401, "authentication_error", "missing x-api-key or Authorization header")
        expected = self.sim.config.api_key
        if expected is not None and key != expected:
            raise ApiError(401, "authentication_error", "invalid API key")

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise ApiError(400, "invalid_request_error", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request_error", "request body must be a JSON object")
        return body


H = TypeVar("H", bound=BaseHandler)
P = ParamSpec("P")


def api_errors(method: Callable[Concatenate[H, P], None]) -> Callable[Concatenate[H, P], None]:
    """An ApiError raised anywhere in the handler method becomes the API's error answer."""

    def wrapper(self: H, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except ApiError as error:
            self.send_error_body(error)

    return wrapper
