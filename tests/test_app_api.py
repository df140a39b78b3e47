"""Declaring a team: what a user writes, and the one clear error when it cannot run.

Pure tests: no Redis, no workers. Every check here happens when the app loads, not at the
first request.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

import chorus
from chorus.errors import AppDefinitionError
from chorus.toml_app import load as load_toml
from messages import AgentMessage, TaskRequest
from workers.blocks import Pipeline, Step, agents_of, entry_agent, from_data, to_data
from workers.canvas import Place, build, planned_agents
from workers.flow import StepOptions, continuation_of, next_step
from workers.loading import AppLoadError, load_app


class Brief(BaseModel):
    facts: list[str]
    angle: str


class Post(BaseModel):
    channel: str
    text: str = Field(max_length=600)


class Digest(BaseModel):
    summary: str
    contradictions: list[str]


def launch_app() -> chorus.App:
    """The issue's contract, verbatim."""
    app = chorus.App("launch")
    app.agent(
        "scout",
        purpose="Gathers facts for a product launch.",
        instructions="You gather verifiable facts.",
        tier="strong",
        output=Brief,
    )
    app.agent(
        "writer",
        purpose="Writes one post for one channel.",
        instructions="You write a post for the channel you are given.",
        tier="fast",
        output=Post,
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
            "scout",
            chorus.fanout(
                {"email": "Write the launch email.", "social": "Write a short social post."},
                agent="writer",
                merge="editor",
            ),
        ),
    )
    app.workflow("triage", chorus.route(["scout", "writer"]))
    return app


def test_the_contract_declares_queues_tasks_and_a_router_from_its_targets() -> None:
    app = launch_app()
    app.validate()
    assert set(app.team.agents) == {"scout", "writer", "editor", "router"}
    assert app.team.default_workflow == "launch"
    router = app.team.agents["router"]
    schema = router.output_model.model_json_schema()
    assert schema["properties"]["agent"]["enum"] == ["scout", "writer"]
    assert "- scout: Gathers facts" in router.system_prompt
    assert "- writer: Writes one post" in router.system_prompt
    assert {f"chorus.agent.{name}" for name in app.team.agents} <= set(app.tasks)
    queues = {queue.name for queue in app.conf.task_queues}
    assert {"agent.scout", "agent.writer", "agent.editor", "agent.router"} <= queues


def test_the_pipeline_plans_a_scout_then_a_fanout_from_its_hand_off() -> None:
    app = launch_app()
    app.validate()
    block = app.team.workflow("launch").block
    root = AgentMessage.root(
        recipient=entry_agent(block), payload=TaskRequest(text="x").model_dump()
    )
    canvas = build(app, block, root, Place(workflow="launch"))
    # The fan-out is built from the scout's hand-off at run time, so only the scout is sent now.
    assert planned_agents(canvas) == {"scout": 1}
    assert agents_of(block) == ["scout", "writer", "editor"]


def test_blocks_round_trip_through_json_as_they_travel_in_step_options() -> None:
    block = chorus.pipeline(
        chorus.evaluate("scout", "checker", max_rounds=3),
        chorus.fanout({"a": chorus.pipeline("x", "y"), "b": "Do b."}, agent="z", merge="m"),
        chorus.consensus("analyst", "judge", perspectives=["p1", "p2"], quorum=1),
        chorus.route(["x", "y"], router="r"),
        chorus.orchestrate("o", "w", "s", max_subtasks=4),
    )
    assert from_data(to_data(block)) == block


def test_nested_pipelines_flatten_and_strings_are_steps() -> None:
    assert chorus.pipeline("a", chorus.pipeline("b", "c")) == Pipeline(
        (Step("a"), Step("b"), Step("c"))
    )


def test_a_replayed_step_starts_exactly_what_it_started_the_first_time() -> None:
    """The hand-off's id derives from the input's id, so the two copies are one step."""
    incoming = AgentMessage.root(recipient="critic", payload=TaskRequest(text="t").model_dump())
    request = TaskRequest(text="t", context={"drafter": {"title": "d"}})
    options = StepOptions(role="critic", reviser="drafter", critic="critic", max_rounds=2)
    verdict = chorus.Critique(verdict="revise", strengths=[], weaknesses=["w"], reasons="r")
    first = next_step("critic", incoming, request, verdict, options).message
    again = next_step("critic", incoming, request, verdict, options).message
    assert first.message_id == again.message_id
    step = continuation_of(incoming.message_id, first, options)
    assert step is not None
    assert step.kind == "revise"
    assert first.recipient == "drafter"


@pytest.mark.parametrize(
    ("declare", "fix"),
    [
        (
            lambda app: app.workflow("w", chorus.pipeline("scout", "ghost")),
            "undeclared agent(s) ghost",
        ),
        (
            lambda app: app.agent(
                "priced", purpose="p", instructions="i", output=Brief, model="no-such-model"
            ),
            "has no price",
        ),
        (
            lambda app: app.workflow("w", chorus.evaluate("scout", "writer")),
            "is a evaluate critic",
        ),
        (
            lambda app: app.workflow("w", chorus.consensus("scout", "editor")),
            "subclass the matching base model",
        ),
        (
            lambda app: app.workflow("w", chorus.orchestrate("scout", "writer", "editor")),
            "chorus.Plan",
        ),
    ],
)
def test_a_broken_team_fails_when_it_loads_with_one_error_naming_the_fix(
    declare: object, fix: str
) -> None:
    app = launch_app()
    declare(app)  # type: ignore[operator]
    with pytest.raises(AppDefinitionError, match=re.escape(fix)):
        app.validate()


def test_declaration_errors_are_immediate() -> None:
    app = launch_app()
    with pytest.raises(AppDefinitionError, match="declared twice"):
        app.agent("scout", purpose="p", instructions="i", output=Brief)
    with pytest.raises(AppDefinitionError, match="tier must be one of"):
        app.agent("other", purpose="p", instructions="i", output=Brief, tier="medium")
    with pytest.raises(AppDefinitionError, match="pydantic model class"):
        app.agent("other", purpose="p", instructions="i", output=dict)  # type: ignore[arg-type]
    with pytest.raises(AppDefinitionError, match="must start with a lower case letter"):
        app.agent("Bad-Name", purpose="p", instructions="i", output=Brief)
    with pytest.raises(AppDefinitionError, match="start it from a step"):
        chorus.fanout({"x": chorus.fanout(["a"], merge="m")}, merge="m")


def test_an_output_the_structured_output_api_cannot_take_is_refused() -> None:
    class Loose(BaseModel):
        scores: dict[str, int]

    app = launch_app()
    app.agent("loose", purpose="p", instructions="i", output=Loose)
    with pytest.raises(AppDefinitionError, match="free-form mapping"):
        app.validate()


def test_a_router_reused_with_other_targets_must_get_its_own_name() -> None:
    app = launch_app()
    app.workflow("other", chorus.route(["scout", "editor"]))
    with pytest.raises(AppDefinitionError, match="give each route its own router"):
        app.validate()


BRANCHES = '{ email = "Write the launch email.", social = "Write a short social post." }'


def test_a_team_file_declares_the_same_app(tmp_path: Path) -> None:
    team = tmp_path / "team.toml"
    team.write_text(
        textwrap.dedent(
            """
            [app]
            name = "launch"

            [agents.scout]
            purpose = "Gathers facts for a product launch."
            instructions = "You gather verifiable facts."
            tier = "strong"
            max_tokens = 2048
            output = "tests.test_app_api:Brief"

            [agents.writer]
            purpose = "Writes one post for one channel."
            instructions = "You write a post for the channel you are given."
            tier = "fast"
            [agents.writer.output]
            type = "object"
            properties.channel = { type = "string" }
            properties.text = { type = "string", maxLength = 600 }

            [agents.editor]
            purpose = "Reviews all posts and names contradictions."
            instructions = "You compare posts and never invent agreement."
            output = "tests.test_app_api:Digest"

            [workflows.launch]
            pipeline = [
              "scout",
              { fanout = { agent = "writer", merge = "editor", branches = BRANCHES } },
            ]

            [workflows.triage]
            route = ["scout", "writer"]
            """
        ).replace("BRANCHES", BRANCHES)
    )
    app = load_toml(team)
    app.validate()
    assert app.team.workflow("launch").block == launch_app().team.workflow("launch").block
    writer = app.team.agents["writer"].output_model
    assert writer.model_validate({"channel": "email", "text": "hi"})
    with pytest.raises(ValueError, match="600"):
        writer.model_validate({"channel": "email", "text": "x" * 601})
    assert app.team.agents["scout"].max_tokens == 2048


def test_a_team_file_with_an_unknown_block_names_the_known_ones(tmp_path: Path) -> None:
    team = tmp_path / "team.toml"
    team.write_text(
        '[agents.a]\npurpose = "p"\ninstructions = "i"\noutput = "tests.test_app_api:Brief"\n'
        '[workflows.w]\nloop = ["a"]\n'
    )
    with pytest.raises(AppDefinitionError, match="pipeline, fanout, route"):
        load_toml(team)


def test_an_app_module_that_cannot_be_imported_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AppLoadError, match="is it on PYTHONPATH"):
        load_app("no_such_team_module")
    (tmp_path / "empty_team.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AppLoadError, match=r"holds no chorus\.App"):
        load_app("empty_team")
    sys.modules.pop("empty_team", None)


def test_importing_the_app_api_and_the_producer_leaves_the_sdk_unloaded() -> None:
    import subprocess

    code = (
        "import sys, chorus, dispatcher, chorus.seed; from dispatcher import Dispatcher; "
        "assert 'anthropic' not in sys.modules, 'anthropic imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
