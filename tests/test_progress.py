"""Progress a user sees while waiting: planned, running and finished steps, and the cost."""

from __future__ import annotations

import io

import pytest

from dispatcher import Dispatcher
from dispatcher.progress import watch
from messages import AgentMessage, TaskRequest
from workers.app import ChorusApp
from workers.blocks import entry_agent
from workers.canvas import Place, build, planned_agents


@pytest.mark.parametrize(
    ("pattern", "planned"),
    [
        ("route", {"router": 1}),
        ("pipeline", {"research": 1, "drafter": 1, "critic": 1}),
        ("fanout", {"research": 3, "merger": 1}),
        ("consensus", {"analyst": 3, "judge": 1}),
        ("evaluate", {"drafter": 1, "critic": 1}),
        ("orchestrate", {"orchestrator": 1}),
    ],
)
def test_each_pattern_knows_which_steps_it_plans(
    app: ChorusApp, pattern: str, planned: dict[str, int]
) -> None:
    block = app.team.workflow(pattern).block
    root = AgentMessage.root(
        recipient=entry_agent(block), payload=TaskRequest(text="Plan the launch").model_dump()
    )
    canvas = build(app, block, root, Place(workflow=pattern))
    assert planned_agents(canvas) == planned


def test_counters_run_down_to_zero_and_watch_reports_every_step(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit("Plan the product launch", pattern="orchestrate", max_subtasks=2)
    out = io.StringIO()
    watch(handle, timeout=60, out=out, every=0.05)

    info = handle.status()
    assert info["status"] == "done"
    counters = {k: int(v) for k, v in info.items() if k.startswith(("queued:", "running:"))}
    assert set(counters) >= {"queued:orchestrator", "running:synthesizer", "queued:research"}
    assert all(value == 0 for value in counters.values())
    text = out.getvalue()
    for agent in ("orchestrator", "research", "synthesizer"):
        assert f".. {agent}" in text
    assert "done" in text
    assert "cost so far $" in text
