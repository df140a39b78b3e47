"""The launch team: research a release, have a critic check it, write one post per channel in
parallel, and merge them into a digest that names every contradiction.

    chorus -A launch_team run "Chorus 2.0 ships on Monday" --embedded

The scout looks facts up in `corpus/` with a tool; each writer delivers its post to the outbox
(LAUNCH_OUTBOX, default ./outbox) with another tool.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, Field

import chorus

CORPUS = Path(__file__).with_name("corpus")

app = chorus.App("launch")


class Brief(BaseModel):
    facts: list[str] = Field(min_length=1, max_length=8)
    angle: str


class Post(BaseModel):
    channel: str
    text: str = Field(max_length=600)


class Digest(BaseModel):
    summary: str
    contradictions: list[str]


@app.tool
def lookup(topic: str, limit: int = 3) -> str:
    """Look a topic up in the team's launch notes.

    Args:
        topic: Words to look for, e.g. "pricing" or "release date".
        limit: How many matching lines to return at most.
    """
    words = [w for w in re.findall(r"[a-z0-9]+", topic.lower()) if len(w) > 2]
    lines = [
        f"{path.stem}: {line.strip('- ').strip()}"
        for path in sorted(CORPUS.glob("*.md"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ranked = sorted(lines, key=lambda line: -sum(word in line.lower() for word in words))
    return "\n".join(ranked[: max(1, min(limit, 10))])


@app.tool
def deliver(channel: str, text: str, context: chorus.ToolContext) -> str:
    """Deliver one channel's post to its destination (the outbox directory).

    Args:
        channel: The channel the post is for, e.g. "email" or "social".
        text: The post, exactly as it should be published.
    """
    outbox = Path(os.environ.get("LAUNCH_OUTBOX", "outbox"))
    outbox.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "_", channel.lower()).strip("_") or "post"
    # One file per call: a redelivered step that runs the tool again rewrites the same file.
    target = outbox / f"{context.task_id}-{slug}-{context.idempotency_key[:8]}.txt"
    target.write_text(text, encoding="utf-8")
    return f"delivered to {target}"


app.agent(
    "scout",
    purpose="Gathers facts for a product launch.",
    instructions="You gather verifiable facts. Look them up in the notes before you answer.",
    tier="strong",
    output=Brief,
    tools=[lookup],
)
app.agent(
    "fact_checker",
    purpose="Checks a brief against the request and passes it or asks for a revision.",
    instructions="You check every fact of the brief. Answer pass only when each is sourced.",
    tier="fast",
    output=chorus.Critique,
)
app.agent(
    "writer",
    purpose="Writes one post for one channel.",
    instructions="You write a post for the channel you are given, then deliver it.",
    tier="fast",
    output=Post,
    tools=[deliver],
)
app.agent(
    "editor",
    purpose="Reviews all posts and names contradictions.",
    instructions="You compare posts and never invent agreement.",
    tier="strong",
    output=Digest,
)

app.workflow(
    "launch",
    chorus.pipeline(
        chorus.evaluate("scout", "fact_checker", max_rounds=2),
        chorus.fanout(
            {"email": "Write the launch email.", "social": "Write a short social post."},
            agent="writer",
            merge="editor",
        ),
    ),
)
app.workflow("triage", chorus.route(["scout", "writer"]))
