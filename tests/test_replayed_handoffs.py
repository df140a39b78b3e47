"""A step whose record exists, delivered again, hands its work on again (issue 14, item 1).

The window: a worker took a message, recorded the step (a critic's `revise`, a pipeline link's
answer, an orchestrator's plan, a router's delegation) and died before the hand-off left. The
message comes back (visibility timeout or transit ledger); the redelivered step finds its
record and must send the hand-off it never sent, or the task stays `running` for good.

Reproduced without a kill: the fleet stops consuming the agent's queue (Celery's
cancel_consumer), the test takes the message off it as a worker would, runs the step in this
process up to its record (the runner, exactly as the worker runs it) and sends nothing on, as a
worker that died there. Then the message is delivered a second time, byte for byte, and the
queue is consumed again (add_consumer), as by a replacement worker. One worker process serves
every agent here, so the module starts one interpreter, not one per agent and restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dispatcher.dispatcher import TaskHandle
from dispatcher.embedded import wait_until
from messages.status import TaskStatus
from tests.books import audit_task, billed_for
from tests.stack import Fleet, decode_element, fleet, give_back, queue_of, quiet, take
from workers.registry import get_agent
from workers.runner import Delivery, Outcome, run_agent

AGENTS = ["research", "drafter", "critic", "orchestrator", "synthesizer", "router", "summarizer"]
WAIT = 60.0
"""A replayed hand-off takes a second here; a dropped one never arrives."""

Script = Callable[[str, list[dict[str, Any]]], None]

DRAFT = {"tool_input": {"title": "Release note", "body": "What changed.", "key_claims": ["x"]}}
REVISE = {
    "tool_input": {
        "verdict": "revise",
        "strengths": ["clear"],
        "weaknesses": ["too short"],
        "reasons": "It leaves out the migration steps.",
    }
}
PASS = {
    "tool_input": {
        "verdict": "pass",
        "strengths": ["complete"],
        "weaknesses": [],
        "reasons": "It covers the migration.",
    }
}


@pytest.fixture(scope="module")
def replay_fleet(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str]
) -> Iterator[Fleet]:
    """The agents of the four patterns on a Redis of their own, the session's simulator."""
    folder = tmp_path_factory.mktemp("replay")
    with fleet(stack_env, folder, AGENTS, concurrency=8, together=True) as running:
        yield running


@contextmanager
def died_after_recording(
    replay_fleet: Fleet, agent: str, submit: Callable[[], TaskHandle]
) -> Iterator[tuple[TaskHandle, Outcome]]:
    """Submit with `agent`'s queue unconsumed; record its step here with no hand-off; deliver
    the same message again and resume the queue once the body has checked the state."""
    client = replay_fleet.client()
    replay_fleet.pause(agent)
    handle = submit()
    key, element = take(client, queue_of(agent))
    _envelope, (args, kwargs, _embed) = decode_element(element)
    outcome = run_agent(
        replay_fleet.dispatcher().app.runtime(),
        get_agent(agent),
        args[0] if args else None,
        Delivery(queue=queue_of(agent), worker="a worker that died before its hand-off"),
        message=kwargs.get("message"),
        options=kwargs.get("options"),
    )
    try:
        yield handle, outcome
    finally:
        give_back(client, key, element)
        replay_fleet.resume(agent)


def finish(replay_fleet: Fleet, handle: TaskHandle, agent: str) -> list[str]:
    """The task's outcome; if it never comes, say what the redelivery did instead."""
    try:
        outcome = handle.wait(WAIT)
    except Exception as exc:
        log = replay_fleet.workers[agent][-1].log_path.read_text(errors="replace")
        ignored = [line for line in log.splitlines() if " ignored" in line]
        pytest.fail(f"{exc}; the redelivered step's worker logged: {ignored or log[-2000:]}")
    assert outcome.status == TaskStatus.DONE, outcome.message.payload
    return [step.agent for step in handle.trace()]


def books_exact(replay_fleet: Fleet, handle: TaskHandle, simulator_url: str) -> None:
    """One record per input message, totals equal to the steps, and to what was billed."""
    client = replay_fleet.client()
    queues = [queue_of(a) for a in AGENTS]
    wait_until(lambda: quiet(client, queues), timeout=WAIT, what="the fleet to go quiet")
    row = audit_task(handle, client, billed_for(simulator_url, handle.task_id))
    assert (row.doubled, row.cut_off) == (0, 0)


def recorded(handle: TaskHandle, agent: str) -> list[Any]:
    return [step for step in handle.trace() if step.agent == agent]


def test_a_critics_recorded_revise_still_starts_the_revision_round(
    replay_fleet: Fleet, script_model: Script, simulator_url: str
) -> None:
    marker = "replay-evaluate-5c1e"
    script_model(marker, [DRAFT, REVISE, DRAFT, PASS])
    dispatcher = replay_fleet.dispatcher()

    def submit() -> TaskHandle:
        return dispatcher.submit(f"{marker}: write the release note", pattern="evaluate")

    with died_after_recording(replay_fleet, "critic", submit) as (handle, _outcome):
        [critic] = recorded(handle, "critic")
        assert '"revise"' in (critic.raw_output or "")
        assert handle.status()["status"] == TaskStatus.RUNNING
        assert [s.agent for s in handle.trace()] == ["drafter", "critic"]  # no round 2 yet

    agents = finish(replay_fleet, handle, "critic")
    assert sorted(agents) == ["critic", "critic", "drafter", "drafter"]
    assert handle.wait(1).result["rounds"] == 2
    books_exact(replay_fleet, handle, simulator_url)


def test_a_recorded_pipeline_link_still_hands_its_answer_to_the_next_link(
    replay_fleet: Fleet, simulator_url: str
) -> None:
    dispatcher = replay_fleet.dispatcher()

    def submit() -> TaskHandle:
        return dispatcher.submit("replay-pipeline-9a2b: brief the team", pattern="pipeline")

    with died_after_recording(replay_fleet, "drafter", submit) as (handle, _outcome):
        assert [s.agent for s in handle.trace()] == ["research", "drafter"]
        assert handle.status()["status"] == TaskStatus.RUNNING

    assert finish(replay_fleet, handle, "drafter") == ["research", "drafter", "critic"]
    books_exact(replay_fleet, handle, simulator_url)


def test_a_recorded_orchestrator_plan_still_fans_out(
    replay_fleet: Fleet, script_model: Script, simulator_url: str
) -> None:
    marker = "replay-orchestrate-3d7f"
    plan = {
        "subtasks": [
            {"name": "costs", "instructions": "Estimate the costs."},
            {"name": "risks", "instructions": "List the risks."},
        ]
    }
    script_model(marker, [{"tool_input": plan}])
    dispatcher = replay_fleet.dispatcher()

    def submit() -> TaskHandle:
        return dispatcher.submit(f"{marker}: plan the migration", pattern="orchestrate")

    with died_after_recording(replay_fleet, "orchestrator", submit) as (handle, _outcome):
        assert [s.agent for s in handle.trace()] == ["orchestrator"]

    agents = finish(replay_fleet, handle, "orchestrator")
    assert sorted(agents) == ["orchestrator", "research", "research", "synthesizer"]
    books_exact(replay_fleet, handle, simulator_url)


def test_a_recorded_router_delegation_still_reaches_the_specialist(
    replay_fleet: Fleet, script_model: Script, simulator_url: str
) -> None:
    marker = "replay-route-8e4c"
    decision = {"agent": "summarizer", "priority": "normal", "reasoning": "A summary request."}
    script_model(marker, [{"tool_input": decision}])
    dispatcher = replay_fleet.dispatcher()

    def submit() -> TaskHandle:
        return dispatcher.submit(f"{marker}: summarize the meeting")

    with died_after_recording(replay_fleet, "router", submit) as (handle, _outcome):
        assert [s.agent for s in handle.trace()] == ["router"]

    assert finish(replay_fleet, handle, "router") == ["router", "summarizer"]
    books_exact(replay_fleet, handle, simulator_url)


def test_a_hand_off_sent_twice_is_one_step(
    replay_fleet: Fleet, script_model: Script, simulator_url: str
) -> None:
    """The critic's message delivered again after the task ended: its revision hand-off goes
    out a second time with the same id, and the drafter's begin script dedupes it."""
    marker = "replay-twice-1b6d"
    script_model(marker, [DRAFT, REVISE, DRAFT, PASS])
    client = replay_fleet.client()
    replay_fleet.pause("critic")
    handle = replay_fleet.dispatcher().submit(f"{marker}: write the note", pattern="evaluate")
    key, element = take(client, queue_of("critic"))
    give_back(client, key, element)
    replay_fleet.resume("critic")
    first = sorted(finish(replay_fleet, handle, "critic"))
    books_exact(replay_fleet, handle, simulator_url)
    totals = handle.status()

    give_back(client, key, element)  # the first critic step, delivered once more
    books_exact(replay_fleet, handle, simulator_url)
    assert sorted(s.agent for s in handle.trace()) == first
    after = handle.status()
    for field in ("steps", "cost_micro_usd", "input_tokens", "output_tokens", "status"):
        assert after.get(field) == totals.get(field), field
