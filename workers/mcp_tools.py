"""Tools from an MCP server (stdio command or streamable HTTP), callable from any worker thread.

The `mcp` client is async and the worker is threads, so each process runs one event loop on
a daemon thread (`process_loop()`), and every thread submits its calls to it with
`asyncio.run_coroutine_threadsafe`. One session per server per process stays open and is
shared by all threads: calls run concurrently on it, each in its own task. The session is
held by one task from open to close, because anyio's scopes must exit in the task that
entered them. When a stdio server exits between calls, the session sees its end and the next
call reconnects first. An HTTP server that went away shows only when a request fails: that
call fails and the next reconnects. A call in flight when the session ends fails and is not
repeated, since the server may already have run it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from mcp.types import Tool as MCPTool

from messages.errors import ChorusError
from workers.tools import NAME_PATTERN, Tool, ToolContext, ToolError

log = logging.getLogger(__name__)

T = TypeVar("T")
Streams = tuple[Any, Any]
"""A transport's (read stream, write stream), as `mcp.Client` takes them."""


READ_BACKSTOP_SECONDS = 2.0


class MCPServerError(ChorusError):
    """An MCP server cannot be reached or used; the message names the server."""


@dataclass(frozen=True)
class StdioParams:
    """A server the worker starts as a subprocess and talks to over stdin/stdout."""

    command: str
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = field(default=None, repr=False)
    """Added to the few variables `mcp` passes on (PATH, HOME, ...): nothing else leaks in."""
    cwd: str | None = None


@dataclass(frozen=True)
class HTTPParams:
    """A server reached over streamable HTTP, e.g. `http://127.0.0.1:8000/mcp`."""

    url: str
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    """Sent with every request (an Authorization header, typically: kept out of repr)."""


class BackgroundLoop:
    """An asyncio event loop on a daemon thread, for async clients used from sync threads."""

    def __init__(self, name: str = "chorus-mcp-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run `coro` on the loop and wait for it; on timeout it is cancelled, then raises."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("BackgroundLoop.run called from its own thread would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


_process_loop: tuple[int, BackgroundLoop] | None = None
_process_loop_lock = threading.Lock()


def process_loop() -> BackgroundLoop:
    """This process's loop, started on first use (again in a forked child: threads do not fork)."""
    global _process_loop
    with _process_loop_lock:
        if _process_loop is None or _process_loop[0] != os.getpid():
            _process_loop = (os.getpid(), BackgroundLoop())
        return _process_loop[1]


class MCPServer:
    """One MCP server's tools as `Tool`s, over one session shared by the process's threads.

    `connect()` opens the session and lists the tools; `tools` are then ready for
    `run_tool_calls`. Names get `prefix_` when `prefix` is given (like pydantic-ai's
    `tool_prefix`), so two servers' `search` tools can coexist. Connect after the worker
    forks: a session belongs to the process that opened it.
    """

    def __init__(
        self,
        params: StdioParams | HTTPParams,
        *,
        name: str | None = None,
        prefix: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 30.0,
        requires_approval: bool = False,
        loop: BackgroundLoop | None = None,
    ) -> None:
        self.params = params
        self.name = name or _label(params)
        self.prefix = prefix
        self.timeout = timeout
        """Seconds per call, enforced by the MCP request itself and given to each `Tool`."""
        self.connect_timeout = connect_timeout
        self.requires_approval = requires_approval
        self._loop = loop
        self._pid: int | None = None
        self._tools: tuple[Tool, ...] | None = None
        self._connecting = threading.Lock()
        self._closed = False
        # Touched on the loop thread only:
        self._session: _Session | None = None
        self._session_lock = asyncio.Lock()  # binds to the loop on first use

    def connect(self) -> MCPServer:
        """Open the session and list the server's tools; does nothing the second time."""
        with self._connecting:
            if self._tools is None:
                if self._loop is None:
                    self._loop = process_loop()
                self._pid = os.getpid()
                listed = self._run(self._list_tools(), self.connect_timeout + self.timeout)
                self._tools = self._make_tools(listed)
        return self

    @property
    def tools(self) -> tuple[Tool, ...]:
        if self._tools is None:
            raise MCPServerError(f"MCP server {self.name}: call connect() before using its tools")
        return self._tools

    @property
    def connected(self) -> bool:
        """A session is open and its transport has not ended (False once a stdio server exits)."""
        session = self._session
        return session is not None and session.client is not None and not session.ended

    def close(self) -> None:
        """End the session (a stdio server's process stops); its tools then fail with an error."""
        self._closed = True
        if self._loop is not None and self._pid == os.getpid():
            self._run(self._end_session(), self.connect_timeout)

    def __enter__(self) -> MCPServer:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        if self._loop is None or self._pid != os.getpid():
            coro.close()
            where = "call connect() first" if self._loop is None else "connect after fork"
            raise MCPServerError(f"MCP server {self.name} is not connected here: {where}")
        try:
            return self._loop.run(coro, timeout)
        except concurrent.futures.TimeoutError:
            message = f"MCP server {self.name}: no answer within {timeout:g} s"
            raise MCPServerError(message) from None

    def _make_tools(self, listed: Sequence[MCPTool]) -> tuple[Tool, ...]:
        tools: dict[str, Tool] = {}
        for remote in listed:
            local = f"{self.prefix}_{remote.name}" if self.prefix else remote.name
            local = re.sub(r"[^a-zA-Z0-9_-]", "_", local)
            if not NAME_PATTERN.match(local) or local in tools:
                log.warning("MCP server %s: tool %r skipped: %r is not a usable, unique name",
                            self.name, remote.name, local)  # fmt: skip
                continue
            tools[local] = Tool(
                name=local,
                description=remote.description or "",
                input_schema=dict(remote.input_schema),
                invoke=self._invoker(remote.name),
                requires_approval=self.requires_approval,
                timeout=self.timeout,
            )
        return tuple(tools.values())

    def _invoker(self, remote_name: str) -> Callable[[Mapping[str, Any], ToolContext], str]:
        def invoke(arguments: Mapping[str, Any], context: ToolContext) -> str:
            call = self._call(remote_name, dict(arguments))
            result = self._run(call, self.connect_timeout + self.timeout)
            text = result_text(result)
            if result.is_error:
                raise ToolError(text or f"MCP tool {remote_name!r} failed without a message")
            return text

        return invoke

    # The rest runs on the loop thread.

    async def _call(self, remote_name: str, arguments: dict[str, Any]) -> CallToolResult:
        client = await self._client()
        # The tool's own timeout (the executor's, same value) is the one the model hears of;
        # the session's read timeout is a backstop a little later, so the two never race.
        backstop = self.timeout + READ_BACKSTOP_SECONDS
        return await client.call_tool(remote_name, arguments, read_timeout_seconds=backstop)

    async def _list_tools(self) -> list[MCPTool]:
        client = await self._client()
        listed: list[MCPTool] = []
        cursor: str | None = None
        for _ in range(100):  # a server whose cursor never ends cannot hang the worker
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return listed

    async def _client(self) -> Client:
        """The live session's client; the first call after the session died reconnects."""
        async with self._session_lock:
            if self._closed:
                raise MCPServerError(f"MCP server {self.name} is closed")
            session = self._session
            if session is not None and not session.ended and session.client is not None:
                return session.client
            if session is not None:
                log.warning("MCP server %s: the session ended; reconnecting", self.name)
                await session.end(self.connect_timeout)
            self._session = session = _Session(self.name)
            return await session.open(self._transport(), self.connect_timeout)

    async def _end_session(self) -> None:
        async with self._session_lock:
            if self._session is not None:
                await self._session.end(self.connect_timeout)
                self._session = None

    def _transport(self) -> AbstractAsyncContextManager[Streams]:
        params = self.params
        if isinstance(params, StdioParams):
            env = dict(params.env) if params.env is not None else None
            server = StdioServerParameters(
                command=params.command, args=list(params.args), env=env, cwd=params.cwd
            )
            return stdio_client(server)
        return _http_transport(params.url, dict(params.headers or {}))


class _Session:
    """One connection, held open by one task until `end()` or until its transport ends."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.client: Client | None = None
        self.ended = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self, transport: AbstractAsyncContextManager[Streams], timeout: float) -> Client:
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(transport, ready))
        try:
            async with asyncio.timeout(timeout):
                self.client = await ready
        except TimeoutError:
            await self.end(timeout)
            message = f"cannot connect to MCP server {self.server} within {timeout:g} s"
            raise MCPServerError(message) from None
        except BaseException:
            await self.end(timeout)
            raise
        return self.client

    async def _hold(
        self, transport: AbstractAsyncContextManager[Streams], ready: asyncio.Future[Client]
    ) -> None:
        """Owns the connection from open to close: anyio's scopes exit in the task that entered."""
        try:
            async with Client(_watched(transport, self._transport_ended)) as client:
                if not ready.done():
                    ready.set_result(client)
                await self._wake.wait()
        except Exception as exc:
            cause = _root_cause(exc)
            if not ready.done():
                ready.set_exception(
                    MCPServerError(f"cannot connect to MCP server {self.server}: {cause}")
                )
            else:
                log.warning("MCP server %s: the session failed: %s", self.server, cause)
        finally:
            self.ended = True
            if not ready.done():
                ready.cancel()

    def _transport_ended(self) -> None:
        self.ended = True
        self._wake.set()

    async def end(self, timeout: float) -> None:
        self.ended = True
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        if self.client is None:  # still connecting: nothing to close gently
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning("MCP server %s did not close within %g s", self.server, timeout)
            task.cancel()


@asynccontextmanager
async def _watched(
    transport: AbstractAsyncContextManager[Streams], on_end: Callable[[], None]
) -> AsyncIterator[Streams]:
    """The transport, reporting when the server's side of it ends.

    Without this the client learns that a stdio server exited only by failing the next call;
    with it, that call reconnects first, so a request that was never sent is never lost.
    """
    async with transport as (read, write):
        yield _WatchedRead(read, on_end), write


_ENDED = (StopAsyncIteration, EndOfStream, ClosedResourceError, BrokenResourceError)


class _WatchedRead:
    """The read stream as it is, but calling `on_end` when it ends."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    def __getattr__(self, name: str) -> Any:  # aclose, last_context (read by the dispatcher)
        return getattr(self._inner, name)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except _ENDED:
            self._on_end()
            raise

    def __aiter__(self) -> _WatchedRead:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except _ENDED:
            self._on_end()
            raise

    async def __aenter__(self) -> _WatchedRead:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        result: bool | None = await self._inner.__aexit__(*exc)
        return result


@asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Streams]:
    # The mcp package's own defaults: 30 s to connect and write, 300 s to read an SSE stream.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def result_text(result: CallToolResult) -> str:
    """The result as text for the model: text blocks as they are, other blocks as JSON."""
    parts = [
        block.text
        if isinstance(block, TextContent)
        else block.model_dump_json(by_alias=True, exclude_none=True)
        for block in result.content
    ]
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content)
    return "\n".join(parts)


def _label(params: StdioParams | HTTPParams) -> str:
    if isinstance(params, StdioParams):
        return " ".join([os.path.basename(params.command), *params.args])
    url = urlsplit(params.url)
    return f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"


def _root_cause(exc: BaseException) -> str:
    """anyio wraps failures in exception groups; the first leaf is the one worth reading."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
