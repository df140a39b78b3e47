"""An Anthropic Messages API look-alike on tornado: async, so hundreds of slow calls overlap."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from simulator.config import SimulatorConfig
from simulator.schema_fill import MARK, fill, salient_words, seed_for
from simulator.scripts import ScriptBook, ScriptError
from simulator.tokens import count_input_tokens, count_output_tokens, prompt_text


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class BaseHandler(tornado.web.RequestHandler):
    config: SimulatorConfig
    scripts: ScriptBook

    def initialize(self, config: SimulatorConfig, scripts: ScriptBook) -> None:
        self.config = config
        self.scripts = scripts

    def write_error_body(self, status: int, kind: str, message: str) -> None:
        self.set_status(status)
        self.set_header("content-type", "application/json")
        self.set_header("request-id", f"req_sim_{uuid.uuid4().hex[:24]}")
        self.finish({"type": "error", "error": {"type": kind, "message": message}})

    def authenticate(self) -> None:
        key = self.request.headers.get("x-api-key", "")
        bearer = self.request.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:].strip()
        if not key:
            raise ApiError(401, "authentication_error", "missing x-api-key or Authorization header")
        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(401, "authentication_error", "invalid API key")

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise ApiError(400, "invalid_request_error", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request_error", "request body must be a JSON object")
        return body


def _check(body: dict[str, Any], *, needs_max_tokens: bool) -> None:
    required = ["model", "messages"] + (["max_tokens"] if needs_max_tokens else [])
    for field in required:
        if field not in body:
            raise ApiError(400, "invalid_request_error", f"{field}: Field required")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise ApiError(400, "invalid_request_error", "messages: at least one message is required")


class MessagesHandler(BaseHandler):
    async def post(self) -> None:
        try:
            self.authenticate()
            body = self.json_body()
            _check(body, needs_max_tokens=True)
            if body.get("stream"):
                raise ApiError(
                    400, "invalid_request_error", "streaming is not supported by the simulator"
                )
            answer = respond(body, self.scripts.take(request_text(body)))
        except ApiError as exc:
            self.write_error_body(exc.status, exc.kind, str(exc))
            return
        delay = self.config.latency + random.uniform(0, self.config.jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        self.set_header("content-type", "application/json")
        self.set_header("request-id", f"req_sim_{uuid.uuid4().hex[:24]}")
        self.set_header("x-chorus-simulated", "true")
        self.finish(json.dumps(answer))


class CountTokensHandler(BaseHandler):
    def post(self) -> None:
        try:
            self.authenticate()
            body = self.json_body()
            _check(body, needs_max_tokens=False)
        except ApiError as exc:
            self.write_error_body(exc.status, exc.kind, str(exc))
            return
        self.finish({"input_tokens": count_input_tokens(body)})


class ScriptHandler(BaseHandler):
    """POST a script, GET the pending ones, DELETE to clear them all."""

    def post(self) -> None:
        try:
            self.scripts.add(self.json_body())
        except (ApiError, ScriptError) as exc:
            self.write_error_body(400, "invalid_request_error", str(exc))
            return
        self.finish({"scripts": self.scripts.pending()})

    def get(self) -> None:
        self.finish({"scripts": self.scripts.pending()})

    def delete(self) -> None:
        self.scripts.clear()
        self.finish({"scripts": []})


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.finish({"status": "ok", "simulated": True})


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        self.write_error_body(404, "not_found_error", f"no route for {self.request.path}")


def request_text(body: dict[str, Any]) -> str:
    """The words the answer draws on: the first text block of the last user message."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [b.get("text") for b in content if isinstance(b, dict)]
                return next((str(t) for t in texts if t), "")
    return ""


def respond(body: dict[str, Any], scripted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Messages API answer for `body`: forced tool, JSON-schema output, or plain text."""
    words = salient_words(request_text(body))
    seed = seed_for(prompt_text(body))
    tools = {t.get("name"): t for t in body.get("tools") or [] if isinstance(t, dict)}
    choice = body.get("tool_choice") or {}
    output_format = (body.get("output_config") or {}).get("format") or {}
    content: list[dict[str, Any]]
    if scripted is not None and "text" in scripted:
        out_text = str(scripted["text"])
        content, stop = [{"type": "text", "text": out_text}], "end_turn"
    elif choice.get("type") == "tool":
        name = choice.get("name")
        if name not in tools:
            raise ApiError(400, "invalid_request_error", f"tool_choice names unknown tool {name!r}")
        schema = tools[name].get("input_schema") or {"type": "object"}
        data = scripted["tool_input"] if scripted else fill(schema, words=words, seed=seed)
        content = [
            {
                "type": "tool_use",
                "id": f"toolu_sim_{uuid.uuid4().hex[:24]}",
                "name": name,
                "input": data,
            }
        ]
        out_text, stop = json.dumps(data), "tool_use"
    elif output_format.get("type") == "json_schema":
        schema = output_format.get("schema", {})
        data = scripted["tool_input"] if scripted else fill(schema, words=words, seed=seed)
        out_text = json.dumps(data)
        content, stop = [{"type": "text", "text": out_text}], "end_turn"
    else:
        out_text = f"{MARK} A response about {' '.join(words[:12]) or 'the request'}."
        content, stop = [{"type": "text", "text": out_text}], "end_turn"
    return {
        "id": f"msg_sim_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": count_input_tokens(body),
            "output_tokens": count_output_tokens(out_text),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def make_app(config: SimulatorConfig) -> tornado.web.Application:
    options = {"config": config, "scripts": ScriptBook()}
    return tornado.web.Application(
        [
            (r"/v1/messages", MessagesHandler, options),
            (r"/v1/messages/count_tokens", CountTokensHandler, options),
            (r"/health", HealthHandler, options),
            (r"/_sim/scripts", ScriptHandler, options),
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


async def serve(config: SimulatorConfig, ready: asyncio.Event | None = None) -> None:
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

        async def start() -> None:
            self._server, port = bind(self.config)
            self.url = f"http://{self.config.host}:{port}"
            self._started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._server.stop()
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
