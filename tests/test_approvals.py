"""Tools that need approval: the step parks in the review queue, a decision resumes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.review import ReviewQueue
from messages import AgentMessage, ChorusError
from tests.tool_fixtures import again, control, ledger, scout, stack
from workers import keys
from workers.approvals import StepParked
from workers.registry import AgentSpec
from workers.resume import approvals
from workers.runner import Delivery, run_agent
from workers.runtime import Runtime
from workers.tools import ToolContext, tool_from_function


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, str]]:
    yield from stack(tmp_path_factory)


@pytest.fixture(autouse=True)
def clean(env: tuple[Runtime, str]) -> Iterator[None]:
    yield
    control(env[1], "/_sim/scripts", "DELETE")


def team(outbox: Path) -> tuple[AgentSpec, str]:
    """lookup runs freely; deliver writes to the outbox only once a reviewer approves."""

    def lookup(topic: str) -> str:
        """Look a topic up."""
        with (outbox / "lookup.log").open("a") as log:
            log.write(f"{topic}\n")
        return f"notes on {topic}"

    def deliver(channel: str, text: str, context: ToolContext) -> str:
        """Post a text to a channel."""
        with (outbox / "deliver.log").open("a") as log:
            log.write(f"{context.idempotency_key} {channel}: {text}\n")
        return f"posted to {channel}"

    return scout(tool_from_function(lookup), tool_from_function(deliver, requires_approval=True))


def plan(marker: str) -> dict[str, object]:
    first = {
        "tool_calls": [
            {"name": "lookup", "input": {"topic": "launch"}},
            {"name": "deliver", "input": {"channel": "blog", "text": "We launched"}},
        ]
    }
    last = {"tool_input": {"answer": "done", "sources": []}}
    return {"match": marker, "responses": [first, last]}


def park(runtime: Runtime, spec: AgentSpec, text: str) -> tuple[AgentMessage, StepParked]:
    """Run the step up to its park; store it as the agent's task would (no task to resume)."""
    root = AgentMessage.root(recipient=spec.name, payload={"text": text})
    runtime.state.submit(root.task_id, pattern="route", root_message=root.to_dict())
    with pytest.raises(StepParked) as parked:
        run_agent(runtime, spec, root.to_dict(), Delivery())
    assert approvals(runtime).park(parked.value, resume=None)
    return root, parked.value


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_an_approved_call_runs_once_after_the_decision_and_nothing_earlier_is_redone(
    env: tuple[Runtime, str], tmp_path: Path
) -> None:
    runtime, url = env
    spec, marker = team(tmp_path)
    control(url, "/_sim/scripts", "POST", plan(marker))

    root, parked = park(runtime, spec, "Announce the launch")

    assert [c.name for c in parked.calls] == ["deliver"]
    assert lines(tmp_path / "lookup.log") == ["launch"]  # the free call ran before the park
    assert lines(tmp_path / "deliver.log") == []
    info = runtime.state.task_info(root.task_id)
    assert info["parked"] == "1"
    assert info.get("running:scout") == "0"  # no worker slot is held while it waits
    queue = ReviewQueue(runtime.state)
    (review,) = [r for r in queue.list() if r.task_id == root.task_id]
    assert review.kind == "tool"
    assert review.review_id == f"{root.task_id}/{root.message_id}"
    assert "deliver(channel='blog'" in review.summary
    shown = queue.show(root.task_id)
    assert shown["kind"] == "tool"
    assert shown["calls"][0]["input"] == {"channel": "blog", "text": "We launched"}

    queue.approve(root.task_id, reviewer="dana")
    with pytest.raises(ChorusError, match=r"decided already|not waiting"):
        queue.approve(review.review_id, reviewer="eve")
    outcome = again(runtime, spec, root)

    assert outcome.message.message_type == "result", outcome.message.payload
    assert lines(tmp_path / "lookup.log") == ["launch"]
    (posted,) = lines(tmp_path / "deliver.log")
    assert posted.endswith("blog: We launched")
    assert outcome.record is not None
    calls = {c["name"]: c for c in outcome.record.tool_calls}
    assert calls["lookup"]["replayed"] is True
    assert calls["deliver"]["output"] == "posted to blog"
    assert [t["replayed"] for t in outcome.record.turns] == [True, False]
    billed = ledger(url, root.task_id)
    assert len(billed["calls"]) == 2  # the parked turn was not paid again
    totals = runtime.state.totals(root.task_id)
    assert int(totals["input_tokens"]) == billed["totals"]["input_tokens"]
    assert int(totals["output_tokens"]) == billed["totals"]["output_tokens"]
    assert not runtime.redis.zscore(keys.TOOL_REVIEWS, review.review_id)


def test_a_rejection_reaches_the_model_as_the_tools_error_and_the_tool_never_runs(
    env: tuple[Runtime, str], tmp_path: Path
) -> None:
    runtime, url = env
    spec, marker = team(tmp_path)
    control(url, "/_sim/scripts", "POST", plan(marker))
    root, _parked = park(runtime, spec, "Announce too early")

    queue = ReviewQueue(runtime.state)
    with pytest.raises(ChorusError, match="needs a note"):
        queue.reject(root.task_id, note="")
    queue.reject(root.task_id, note="not before Monday", reviewer="ops")
    outcome = again(runtime, spec, root)

    assert outcome.message.message_type == "result", outcome.message.payload
    assert lines(tmp_path / "deliver.log") == []
    assert outcome.record is not None
    (rejected,) = [c for c in outcome.record.tool_calls if c["name"] == "deliver"]
    assert rejected["output"] is None
    assert rejected["error"] == (
        "A reviewer (ops) rejected this call of 'deliver': not before Monday"
    )


def test_a_redelivered_parked_step_parks_once_and_opens_one_review(
    env: tuple[Runtime, str], tmp_path: Path
) -> None:
    runtime, url = env
    spec, marker = team(tmp_path)
    control(url, "/_sim/scripts", "POST", plan(marker))
    root, _parked = park(runtime, spec, "Announce twice")

    with pytest.raises(StepParked) as second:
        again(runtime, spec, root)  # the same message again, before any decision

    assert not approvals(runtime).park(second.value, resume=None)
    assert len([r for r in ReviewQueue(runtime.state).list() if r.task_id == root.task_id]) == 1
    assert len(ledger(url, root.task_id)["calls"]) == 1
    assert lines(tmp_path / "lookup.log") == ["launch"]
