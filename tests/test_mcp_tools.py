"""Tools from a real MCP server (tests/mcp_notes_server.py), over stdio and streamable HTTP.

One server of each kind per module; tests that kill or close a server start their own.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.embedded import ManagedProcess, free_port, wait_until
from workers.mcp_tools import HTTPParams, MCPServer, MCPServerError, StdioParams
from workers.tool_exec import ToolCall, run_tool_calls
from workers.tools import Tool, ToolContext

SERVER = str(Path(__file__).with_name("mcp_notes_server.py"))
STDIO = StdioParams(sys.executable, [SERVER])


def context_for(call: ToolCall) -> ToolContext:
    return ToolContext(task_id="task-1", message_id="msg-1", tool_use_id=call.id, agent="research")


def by_name(server: MCPServer) -> dict[str, Tool]:
    return {tool.name: tool for tool in server.tools}


def start_http_server(logs: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    argv = [sys.executable, SERVER, "--http", str(port)]
    process = ManagedProcess(f"mcp-notes-{port}-{os.urandom(2).hex()}", argv, os.environ, logs)

    def listening() -> bool:
        if not process.alive():
            raise RuntimeError(f"the MCP notes server exited:\n{process.log_tail()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    wait_until(listening, timeout=20, what=f"the MCP notes server on port {port}")
    return process, f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-logs")


@pytest.fixture(scope="module")
def http_url(logs: Path) -> Iterator[str]:
    process, url = start_http_server(logs)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def stdio_server() -> Iterator[MCPServer]:
    with MCPServer(STDIO, prefix="notes") as server:
        yield server


@pytest.fixture(scope="module")
def http_server(http_url: str) -> Iterator[MCPServer]:
    with MCPServer(HTTPParams(http_url, headers={"X-Chorus-Test": "yes"})) as server:
        yield server


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> MCPServer:
    fixture = "stdio_server" if request.param == "stdio" else "http_server"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def tool_name(server: MCPServer, name: str) -> str:
    return f"{server.prefix}_{name}" if server.prefix else name


def call(server: MCPServer, name: str, arguments: dict[str, object], call_id: str = "c1") -> str:
    """One call through run_tool_calls, as the runner makes it; returns output or error."""
    tool_call = ToolCall(call_id, tool_name(server, name), dict(arguments))
    outcome = run_tool_calls(by_name(server), [tool_call], context_for)[0]
    return outcome.output if outcome.output is not None else f"ERROR {outcome.error}"


def test_the_servers_tools_are_listed_with_their_descriptions_and_schemas(
    server: MCPServer,
) -> None:
    tools = by_name(server)
    names = ["echo", "lookup_note", "explode", "sleep", "gather", "header", "pid"]

    assert sorted(tools) == sorted(tool_name(server, n) for n in names)
    lookup = tools[tool_name(server, "lookup_note")]
    assert lookup.description == "Look up a note by its title."
    assert lookup.input_schema["type"] == "object"
    assert lookup.input_schema["properties"]["title"]["type"] == "string"
    assert lookup.input_schema["required"] == ["title"]
    assert lookup.to_api()["name"] == tool_name(server, "lookup_note")


def test_a_prefix_keeps_two_servers_tools_apart(
    stdio_server: MCPServer, http_server: MCPServer
) -> None:
    together = by_name(stdio_server) | by_name(http_server)

    assert len(together) == len(stdio_server.tools) + len(http_server.tools)
    assert "notes_echo" in together
    assert "echo" in together


def test_a_call_returns_the_servers_answer(server: MCPServer) -> None:
    assert call(server, "lookup_note", {"title": "redis"}) == (
        "Redis is both the broker and the shared state."
    )
    assert call(server, "pid", {}) == call(server, "pid", {}), "one session, one server process"


def test_an_is_error_result_goes_back_to_the_model_as_an_error(server: MCPServer) -> None:
    assert call(server, "lookup_note", {"title": "kafka"}) == (
        "ERROR Error executing tool lookup_note: no note titled 'kafka'; known: celery, redis"
    )


def test_a_tool_that_raises_on_the_server_is_an_error_outcome(server: MCPServer) -> None:
    assert call(server, "explode", {"message": "boom"}) == "ERROR Error executing tool explode"


def test_arguments_the_server_rejects_are_an_error_outcome(server: MCPServer) -> None:
    answer = call(server, "echo", {"txt": "typo"})

    assert answer.startswith("ERROR Error executing tool echo: 1 validation error")
    assert "text\n  Field required" in answer


def test_http_headers_are_sent_with_every_request(http_server: MCPServer) -> None:
    assert call(http_server, "header", {"name": "X-Chorus-Test"}) == "yes"


def test_many_threads_calling_at_once_share_the_session_concurrently(server: MCPServer) -> None:
    """Every call waits at a server-side barrier of 12: only concurrent calls can all pass."""
    gather = by_name(server)[tool_name(server, "gather")]
    answers: list[str] = []
    failures: list[BaseException] = []
    group = f"threads-{server.name}"

    def one(i: int) -> None:
        context = context_for(ToolCall(f"c{i}", gather.name, {}))
        try:
            answers.append(str(gather.invoke({"group": group, "size": 12}, context)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert failures == []
    assert answers == [f"{group}: 12 together"] * 12


def test_a_call_past_the_servers_timeout_is_reported(http_url: str) -> None:
    with MCPServer(HTTPParams(http_url), timeout=0.3) as server:
        assert call(server, "sleep", {"seconds": 5}) == "ERROR Tool 'sleep' timed out after 0.3 s"
        assert call(server, "echo", {"text": "still here"}) == "still here"


def test_a_stdio_server_that_died_between_calls_is_restarted_by_the_next_call() -> None:
    with MCPServer(STDIO) as server:
        first = int(call(server, "pid", {}))
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not server.connected, timeout=5, what="the session to see its end")

        second = call(server, "pid", {})

        assert second.isdigit()
        assert int(second) != first
        assert server.connected


def test_an_http_server_that_restarted_is_reached_again(logs: Path) -> None:
    port = free_port()
    process, url = start_http_server(logs, port)
    try:
        with MCPServer(HTTPParams(url)) as server:
            assert call(server, "echo", {"text": "before"}) == "before"
            process.stop()
            # Over HTTP the end shows only when a request fails: that call is lost.
            assert call(server, "echo", {"text": "lost"}) == "ERROR MCPError: Connection closed"
            process, _ = start_http_server(logs, port)

            assert call(server, "echo", {"text": "after"}) == "after"
    finally:
        process.stop()


def test_close_ends_the_session_and_the_tools_fail_after_it() -> None:
    server = MCPServer(STDIO).connect()
    pid = int(call(server, "pid", {}))

    server.close()

    assert not server.connected
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped, not left behind
    assert call(server, "echo", {"text": "x"}) == (
        f"ERROR MCPServerError: MCP server {server.name} is closed"
    )
    server.close()  # twice is fine


def test_a_server_that_cannot_start_is_refused_at_connect() -> None:
    missing = MCPServer(StdioParams("/nonexistent/mcp-server"), connect_timeout=5)
    with pytest.raises(MCPServerError, match=r"cannot connect to MCP server mcp-server"):
        missing.connect()

    nobody = MCPServer(HTTPParams(f"http://127.0.0.1:{free_port()}/mcp"), connect_timeout=5)
    with pytest.raises(MCPServerError, match=r"cannot connect to MCP server http://127\.0\.0\.1"):
        nobody.connect()
    with pytest.raises(MCPServerError, match=r"call connect\(\) before using its tools"):
        nobody.tools  # noqa: B018
