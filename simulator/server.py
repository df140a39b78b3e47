"""An Anthropic Messages API look-alike on tornado: async, so hundreds of slow calls overlap."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from simulator.answers import respond
from simulator.cache import PromptCache
from simulator.config import SimulatorConfig
from simulator.errors import ApiError
from simulator.faults import FaultConfigError, FaultPlan
from simulator.ledger import Charge, Ledger
from simulator.limits import Limits, RateLimiter, retry_after_headers
from simulator.scripts import ScriptBook, ScriptError
from simulator.tokens import count_input_tokens

SPEND_LIMIT_MESSAGE = (
    "You have reached your specified workspace API usage limits. You will regain access on the "
    "first day of next month or when the limit is raised."
)


@dataclass
class SimState:
    """Everything the handlers share; lives on the server's event loop thread."""

    config: SimulatorConfig
    scripts: ScriptBook = field(default_factory=ScriptBook)
    ledger: Ledger = field(default_factory=Ledger)

    def __post_init__(self) -> None:
        config = self.config
        self.faults = FaultPlan(
            rates=dict(config.fault_rates),
            schedule=list(config.fault_schedule),
            seed=config.seed,
            retry_after=config.retry_after,
            hang_seconds=config.hang_seconds,
        )
        self.cache = PromptCache(config.min_cache_tokens)
        self.limiter = RateLimiter(Limits(rpm=config.rpm, itpm=config.itpm, otpm=config.otpm))


class BaseHandler(tornado.web.RequestHandler):
    sim: SimState

    def initialize(self, sim: SimState) -> None:
        self.sim = sim

    def send_error_body(self, error: ApiError) -> None:
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("content-type", "application/json")
        self.set_header("request-id", new_id("req_sim"))
        self.finish({"type": "error", "error": {"type": error.kind, "message": str(error)}})

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


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def check_request(body: dict[str, Any], *, needs_max_tokens: bool) -> None:
    required = ["model", "messages"] + (["max_tokens"] if needs_max_tokens else [])
    for name in required:
        if name not in body:
            raise ApiError(400, "invalid_request_error", f"{name}: Field required")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise ApiError(400, "invalid_request_error", "messages: at least one message is required")
    if body.get("stream"):
        raise ApiError(400, "invalid_request_error", "streaming is not supported by the simulator")


class MessagesHandler(BaseHandler):
    async def post(self) -> None:
        sim = self.sim
        try:
            self.authenticate()
            body = self.json_body()
            check_request(body, needs_max_tokens=True)
            model = str(body["model"])
            forced = (body.get("tool_choice") or {}).get("type") == "tool"
            if forced and model in sim.config.no_forced_tool_models:
                raise ApiError(
                    400,
                    "invalid_request_error",
                    f"tool_choice: forcing a tool is not supported with {model}; "
                    "use output_config.format for structured output",
                )
            fault = sim.faults.draw()
            await self._inject(fault)
            wait = sim.limiter.admit(model, count_input_tokens(body))
            if wait is not None:
                raise ApiError(
                    429,
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization.",
                    {**retry_after_headers(wait), **sim.limiter.headers(model)},
                )
            answer = respond(body, sim.scripts, sim.cache, fault)
        except ApiError as error:
            self.send_error_body(error)
            return
        delay = sim.config.latency + random.uniform(0, sim.config.jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        usage = answer["usage"]
        sim.limiter.settle(model, usage["output_tokens"])
        metadata = body.get("metadata") or {}
        user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
        sim.ledger.bill(Charge(answer["id"], model, user_id, dict(usage)))
        for name, value in sim.limiter.headers(model).items():
            self.set_header(name, value)
        self.set_header("content-type", "application/json")
        self.set_header("request-id", new_id("req_sim"))
        self.set_header("x-chorus-simulated", "true")
        self.finish(json.dumps(answer))

    async def _inject(self, fault: str | None) -> None:
        """Transport-level faults end the request here; content faults go to `respond`."""
        faults = self.sim.faults
        if fault == "rate_limit":
            raise ApiError(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit (simulated).",
                retry_after_headers(faults.retry_after),
            )
        if fault == "spend_limit":
            raise ApiError(429, "rate_limit_error", SPEND_LIMIT_MESSAGE)
        if fault == "overloaded":
            raise ApiError(529, "overloaded_error", "Overloaded (simulated)")
        if fault == "server_error":
            raise ApiError(500, "api_error", "Internal server error (simulated)")
        if fault == "hang":
            await asyncio.sleep(faults.hang_seconds)
            raise ApiError(504, "timeout_error", "the simulated hang ended")


class CountTokensHandler(BaseHandler):
    def post(self) -> None:
        try:
            self.authenticate()
            body = self.json_body()
            check_request(body, needs_max_tokens=False)
        except ApiError as error:
            self.send_error_body(error)
            return
        self.finish({"input_tokens": count_input_tokens(body)})


class ScriptHandler(BaseHandler):
    """POST a script, GET the pending ones, DELETE to clear them all."""

    def post(self) -> None:
        try:
            self.sim.scripts.add(self.json_body())
        except ScriptError as exc:
            self.send_error_body(ApiError(400, "invalid_request_error", str(exc)))
            return
        except ApiError as error:
            self.send_error_body(error)
            return
        self.finish({"scripts": self.sim.scripts.pending()})

    def get(self) -> None:
        self.finish({"scripts": self.sim.scripts.pending()})

    def delete(self) -> None:
        self.sim.scripts.clear()
        self.finish({"scripts": []})


class FaultsHandler(BaseHandler):
    """GET the fault plan and what was injected; POST new rates/schedule."""

    def get(self) -> None:
        self.finish(self.sim.faults.report())

    def post(self) -> None:
        try:
            self.sim.faults.update(self.json_body())
        except (FaultConfigError, ValueError, TypeError) as exc:
            self.send_error_body(ApiError(400, "invalid_request_error", str(exc)))
            return
        self.finish(self.sim.faults.report())


class LedgerHandler(BaseHandler):
    """GET what was billed (optionally `?user_id=`); DELETE to start a new ledger."""

    def get(self) -> None:
        user_id = self.get_query_argument("user_id", None)
        self.finish(self.sim.ledger.report(user_id))

    def delete(self) -> None:
        self.sim.ledger.clear()
        self.finish({"calls": [], "totals": {}})


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "simulated": True, "rate_limited": self.sim.limiter.rejected})


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        self.send_error_body(ApiError(404, "not_found_error", f"no route for {self.request.path}"))


def make_app(config: SimulatorConfig) -> tornado.web.Application:
    options = {"sim": SimState(config)}
    return tornado.web.Application(
        [
            (r"/v1/messages", MessagesHandler, options),
            (r"/v1/messages/count_tokens", CountTokensHandler, options),
            (r"/health", HealthHandler, options),
            (r"/_sim/scripts", ScriptHandler, options),
            (r"/_sim/faults", FaultsHandler, options),
            (r"/_sim/ledger", LedgerHandler, options),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=options,
    )


def bind(config: SimulatorConfig) -> tuple[tornado.httpserver.HTTPServer, int]:
    """Create the server on the current event loop; returns it with the port it got."""
    sockets = tornado.netutil.bind_sockets(config.port, address=config.host)
    server = tornado.httpserver.HTTPServer(make_app(config), idle_connection_timeout=300)
    server.add_sockets(sockets)
    return server, int(sockets[0].getsockname()[1])


async def serve(config: SimulatorConfig) -> None:
    server, port = bind(config)
    print(f"simulator listening on http://{config.host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()


class BackgroundSimulator:
    """The simulator on its own thread and event loop, for tests and embedding."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> tornado.httpserver.HTTPServer:
            server, port = bind(self.config)
            self.url = f"http://{self.config.host}:{port}"
            self._started.set()
            return server

        server = self._loop.run_until_complete(start())
        self._loop.run_forever()
        server.stop()
        self._loop.close()

    def start(self) -> BackgroundSimulator:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> BackgroundSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
