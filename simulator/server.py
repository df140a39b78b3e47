"""An Anthropic Messages API look-alike on tornado: async, so hundreds of slow calls overlap."""

from __future__ import annotations

import asyncio
import json
import random
import threading

import tornado.httpserver
import tornado.netutil
import tornado.web

from simulator.base import BaseHandler, SimState
from simulator.batch_api import (
    BatchCancelHandler,
    BatchControlHandler,
    BatchesHandler,
    BatchHandler,
    BatchResultsHandler,
)
from simulator.config import SimulatorConfig
from simulator.control import FaultsHandler, LedgerHandler, ScriptHandler, ToolsHandler
from simulator.conversation import check_request, search_text
from simulator.errors import ApiError
from simulator.faults import FaultPlan
from simulator.limits import retry_after_headers
from simulator.tokens import count_input_tokens

__all__ = ["BackgroundSimulator", "SimState", "bind", "make_app", "serve"]

SPEND_LIMIT_MESSAGE = (
    "You have reached your specified workspace API usage limits. You will regain access on the "
    "first day of next month or when the limit is raised."
)


class MessagesHandler(BaseHandler):
    async def post(self) -> None:
        sim = self.sim
        try:
            self.authenticate()
            body = self.json_body()
            sim.check(body)
            model = str(body["model"])
            fault, plan = sim.faults.draw(search_text(body))
            await self._inject(fault, plan)
            wait = sim.limiter.admit(model, count_input_tokens(body))
            if wait is not None:
                raise ApiError(
                    429,
                    "rate_limit_error",
                    "This request would exceed the rate limit for your organization.",
                    {**retry_after_headers(wait), **sim.limiter.headers(model)},
                )
            answer = sim.answer(body, fault)
        except ApiError as error:
            self.send_error_body(error)
            return
        delay = sim.config.latency + random.uniform(0, sim.config.jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        sim.limiter.settle(model, answer["usage"]["output_tokens"])
        sim.bill(body, answer)
        for name, value in sim.limiter.headers(model).items():
            self.set_header(name, value)
        self.set_header("content-type", "application/json")
        self.finish(json.dumps(answer))

    async def _inject(self, fault: str | None, plan: FaultPlan) -> None:
        """Transport-level faults end the request here; content faults go to `respond`."""
        if fault == "rate_limit":
            raise ApiError(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit (simulated).",
                retry_after_headers(plan.retry_after),
            )
        if fault == "spend_limit":
            raise ApiError(429, "rate_limit_error", SPEND_LIMIT_MESSAGE)
        if fault == "overloaded":
            raise ApiError(529, "overloaded_error", "Overloaded (simulated)")
        if fault == "server_error":
            raise ApiError(500, "api_error", "Internal server error (simulated)")
        if fault == "hang":
            await asyncio.sleep(plan.hang_seconds)
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


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "simulated": True, "rate_limited": self.sim.limiter.rejected})


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        self.send_error_body(ApiError(404, "not_found_error", f"no route for {self.request.path}"))


def make_app(config: SimulatorConfig) -> tornado.web.Application:
    options = {"sim": SimState(config)}
    batch = r"/v1/messages/batches/(msgbatch_[A-Za-z0-9_]+)"
    return tornado.web.Application(
        [
            (r"/v1/messages", MessagesHandler, options),
            (r"/v1/messages/count_tokens", CountTokensHandler, options),
            (r"/v1/messages/batches", BatchesHandler, options),
            (batch, BatchHandler, options),
            (f"{batch}/cancel", BatchCancelHandler, options),
            (f"{batch}/results", BatchResultsHandler, options),
            (r"/health", HealthHandler, options),
            (r"/_sim/scripts", ScriptHandler, options),
            (r"/_sim/faults", FaultsHandler, options),
            (r"/_sim/ledger", LedgerHandler, options),
            (r"/_sim/tools", ToolsHandler, options),
            (r"/_sim/batches", BatchControlHandler, options),
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
        # Batches still waiting and simulated hangs end with the loop, not as stray tasks.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
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
