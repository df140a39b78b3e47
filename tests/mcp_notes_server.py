"""A small MCP server for the tests: `python tests/mcp_notes_server.py` (stdio) or `--http PORT`.

Built with the `mcp` package's own server API, so the client side is tested against the real
protocol. `gather` is a barrier: it answers only once `size` calls of its group are in flight
at the same moment, which proves concurrency without timing anything.
"""

from __future__ import annotations

import argparse
import os

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

NOTES = {
    "redis": "Redis is both the broker and the shared state.",
    "celery": "One queue per agent.",
}

server = MCPServer("notes", log_level="WARNING")

_groups: dict[str, tuple[int, anyio.Event]] = {}


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def lookup_note(title: str) -> str:
    """Look up a note by its title."""
    if title not in NOTES:
        raise ToolError(f"no note titled {title!r}; known: {', '.join(sorted(NOTES))}")
    return NOTES[title]


@server.tool()
def explode(message: str) -> str:
    """Fail with an unexpected exception."""
    raise RuntimeError(message)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep without blocking the server's other calls."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
async def gather(group: str, size: int, timeout: float = 5.0) -> str:
    """Answer once `size` calls of `group` are in flight together, or fail after `timeout`."""
    count, everyone = _groups.get(group, (0, anyio.Event()))
    count += 1
    _groups[group] = (count, everyone)
    if count >= size:
        everyone.set()
    with anyio.move_on_after(timeout):
        await everyone.wait()
    if not everyone.is_set():
        raise ToolError(f"only {_groups[group][0]} of {size} calls of {group!r} arrived")
    return f"{group}: {size} together"


@server.tool()
def header(name: str, ctx: Context) -> str:
    """A header of the HTTP request that carried this call ('' over stdio or when absent)."""
    return (ctx.headers or {}).get(name.lower(), "")


@server.tool()
def pid() -> int:
    """The server's process id (the tests kill it to see the client reconnect)."""
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT")
    args = parser.parse_args()
    if args.http is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
