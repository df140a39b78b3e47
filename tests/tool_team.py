"""A team for the tool tests' worker processes (CHORUS_APP=tests.tool_team).

The `lookup` tool appends one line per run to the file CHORUS_TEST_TOOL_LOG names, so a test
can count how often each call really ran, whatever happened to the worker that ran it.
"""

from __future__ import annotations

import os

import chorus
from tests.tool_fixtures import Findings
from workers.tools import ToolContext

app = chorus.App("tool_team")


@app.tool
def lookup(topic: str, context: ToolContext) -> str:
    """Look a topic up in the team's notes.

    Args:
        topic: What to look up.
    """
    with open(os.environ["CHORUS_TEST_TOOL_LOG"], "a") as log:
        log.write(f"{context.task_id} {context.tool_use_id} {topic}\n")
    return f"notes on {topic}"


app.agent(
    "scout",
    purpose="Looks topics up in the team's notes and answers.",
    instructions="You are the tool team's scout: look things up with your tools, then answer.",
    tier="fast",
    output=Findings,
    tools=[lookup],
)
