"""A user's own team, from a directory outside the repository, as the README shows it.

The module is the issue's contract verbatim. Everything runs through the installed `chorus` and
`celery` commands against the session's private Redis and simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.embedded import ManagedProcess, node_name, stop_all, wait_until
from tests.helpers import with_db

CHORUS = str(Path(sys.executable).with_name("chorus"))
CELERY = str(Path(sys.executable).with_name("celery"))

LAUNCH_TEAM = """
from pydantic import BaseModel, Field
import chorus

app = chorus.App("launch")

class Brief(BaseModel):
    facts: list[str]
    angle: str

class Post(BaseModel):
    channel: str
    text: str = Field(max_length=600)

class Digest(BaseModel):
    summary: str
    contradictions: list[str]

app.agent("scout", purpose="Gathers facts for a product launch.",
          instructions="You gather verifiable facts.", tier="strong", output=Brief)
app.agent("writer", purpose="Writes one post for one channel.",
          instructions="You write a post for the channel you are given.", tier="fast", output=Post)
app.agent("editor", purpose="Reviews all posts and names contradictions.",
          instructions="You compare posts and never invent agreement.", tier="strong",
          output=Digest)

app.workflow("launch", chorus.pipeline(
    "scout",
    chorus.fanout({"email": "Write the launch email.", "social": "Write a short social post."},
                  agent="writer", merge="editor"),
))
app.workflow("triage", chorus.route(["scout", "writer"]))
"""

TEAM_TOML = """
[app]
name = "filed"

[agents.scout]
purpose = "Gathers facts for a product launch."
instructions = "You gather verifiable facts."
tier = "strong"
output = { type = "object", properties = { facts = { type = "array", items = { type = "string" } }, angle = { type = "string" } } }

[workflows.solo]
pipeline = ["scout"]
"""  # noqa: E501


@pytest.fixture(scope="module")
def app_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The session's Redis server, a database of this app's own: apps that share a database
    share queue names (the session's seed workers consume `agent.router` in theirs)."""
    return with_db(stack_env, 7)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Somewhere that is not the repository, holding the user's module."""
    directory = tmp_path_factory.mktemp("user_project")
    (directory / "launch_team.py").write_text(textwrap.dedent(LAUNCH_TEAM))
    (directory / "team.toml").write_text(TEAM_TOML)
    return directory


def chorus_json(user_dir: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [CHORUS, *args, "--json"],
        cwd=user_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_run_embedded_runs_the_users_workflow_with_its_own_agents(
    user_dir: Path, app_env: dict[str, str]
) -> None:
    document = chorus_json(
        user_dir,
        app_env,
        "-A",
        "launch_team",
        "run",
        "Chorus 2.0 ships on Monday",
        "--workflow",
        "launch",
        "--embedded",
    )
    assert document["workflow"] == "launch"
    assert document["status"] == "done"
    assert sorted(step["agent"] for step in document["steps"]) == [
        "editor",
        "scout",
        "writer",
        "writer",
    ]
    assert set(document["result"]) == {"summary", "contradictions"}
    writers = [s for s in document["steps"] if s["agent"] == "writer"]
    assert {s["model"] for s in writers} != {
        s["model"] for s in document["steps"] if s["agent"] == "scout"
    }


def test_one_agent_alone_and_a_team_file(user_dir: Path, app_env: dict[str, str]) -> None:
    alone = chorus_json(
        user_dir,
        app_env,
        "-A",
        "launch_team",
        "run",
        "What ships?",
        "--agent",
        "scout",
        "--embedded",
    )
    assert [step["agent"] for step in alone["steps"]] == ["scout"]
    assert set(alone["result"]) == {"facts", "angle"}
    env = {**app_env, "CHORUS_APP": str(user_dir / "team.toml")}
    filed = chorus_json(user_dir, env, "run", "What ships?", "--embedded")
    assert filed["workflow"] == "solo"
    assert [step["agent"] for step in filed["steps"]] == ["scout"]


@pytest.fixture
def launch_workers(user_dir: Path, app_env: dict[str, str], log_dir: Path) -> Iterator[None]:
    """`chorus -A launch_team worker --all` and `celery -A launch_team worker -Q agent.scout`."""
    env = {**app_env, "PYTHONPATH": str(user_dir)}
    by_chorus = ManagedProcess(
        "launch-all",
        [CHORUS, "-A", "launch_team", "worker", "--all", "-c", "4"],
        env,
        log_dir,
    )
    by_celery = ManagedProcess(
        "launch-scout",
        [
            CELERY,
            "-A",
            "launch_team",
            "worker",
            "-Q",
            "agent.scout",
            "-n",
            node_name(["scout"]),
            "--pool",
            "threads",
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
        log_dir,
    )
    yield
    stop_all([by_chorus, by_celery])


def test_the_users_app_serves_from_python_and_celery_finds_it_with_dash_a(
    user_dir: Path, app_env: dict[str, str], launch_workers: None
) -> None:
    sys.path.insert(0, str(user_dir))
    try:
        import launch_team  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(user_dir))
    from dispatcher import Dispatcher
    from workers.settings import Settings

    dispatcher = Dispatcher(launch_team.app.using(Settings.from_env(app_env)))

    def consumers_of_scout() -> int:
        replies = dispatcher.app.control.inspect(timeout=0.5).active_queues() or {}
        return sum(1 for queues in replies.values() for q in queues if q["name"] == "agent.scout")

    wait_until(lambda: consumers_of_scout() >= 2, timeout=90, what="both scout consumers")
    outcome = dispatcher.submit("Chorus 2.0 ships on Monday", workflow="launch").wait(90)
    assert outcome.ok, outcome.result
    assert outcome.pattern == "launch"
    triage = dispatcher.submit("Write the launch tweet", workflow="triage").wait(90)
    assert triage.ok, triage.result
    assert dispatcher.handle(triage.task_id).trace()[0].agent == "router"
