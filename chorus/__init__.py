"""Chorus: teams of Claude agents on Celery and Redis.

    import chorus
    app = chorus.App("launch")
    app.agent("scout", purpose=..., instructions=..., tier="strong", output=Brief)
    app.workflow("launch", chorus.pipeline("scout", chorus.fanout({...}, agent="writer",
                                                                  merge="editor")))

Run it with `chorus -A launch_team worker --all` and `chorus -A launch_team run TEXT`, or
`Dispatcher(app).submit(text, workflow="launch")` from Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chorus.app import App
from chorus.blocks import consensus, evaluate, fanout, orchestrate, pipeline, route, step
from chorus.errors import (
    AppDefinitionError,
    AppLoadError,
    BlockError,
    ChorusError,
    InvalidMessageError,
    UnknownAgentError,
)
from messages import AgentMessage, Critique, Judgement, Plan, RouteDecision, Verdict
from messages.payloads import Subtask
from workers.tools import Tool, ToolContext, ToolError

if TYPE_CHECKING:
    from dispatcher.dispatcher import Dispatcher, TaskHandle, TaskOutcome
    from workers.mcp_tools import HTTPParams, MCPServer, StdioParams

__all__ = [
    "AgentMessage",
    "App",
    "AppDefinitionError",
    "AppLoadError",
    "BlockError",
    "ChorusError",
    "Critique",
    "Dispatcher",
    "HTTPParams",
    "InvalidMessageError",
    "Judgement",
    "MCPServer",
    "Plan",
    "RouteDecision",
    "StdioParams",
    "Subtask",
    "TaskHandle",
    "TaskOutcome",
    "Tool",
    "ToolContext",
    "ToolError",
    "UnknownAgentError",
    "Verdict",
    "consensus",
    "evaluate",
    "fanout",
    "orchestrate",
    "pipeline",
    "route",
    "step",
]


def __getattr__(name: str) -> Any:
    # The producer API on demand: `import chorus` to declare a team stays as light as it can.
    if name in ("Dispatcher", "TaskHandle", "TaskOutcome"):
        from dispatcher import dispatcher

        return getattr(dispatcher, name)
    if name in ("MCPServer", "StdioParams", "HTTPParams"):
        from workers import mcp_tools  # the mcp SDK, only for apps that use a server

        return getattr(mcp_tools, name)
    raise AttributeError(f"module 'chorus' has no attribute {name!r}")
