"""Every delegation pattern end to end on real workers, including failed branches and splits."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from dispatcher import Dispatcher
from messages import EvaluatedDraft, Judgement, MergedAnalysis, Synthesis

Script = Callable[[str, list[dict[str, Any]]], None]


def unique(text: str) -> str:
    return f"{text} [case {uuid.uuid4().hex[:8]}]"


def verdict(vote: str) -> dict[str, Any]:
    return {"tool_input": {"verdict": vote, "confidence": 0.8, "reasons": [f"{vote} because"]}}


def judgement(consensus: str, confidence: float) -> dict[str, Any]:
    return {
        "tool_input": {
            "consensus": consensus,
            "confidence": confidence,
            "key_agreements": ["cost matters"],
            "key_disagreements": ["risk appetite"] if consensus == "SPLIT" else [],
            "recommendation": "Decide with the budget owner.",
        }
    }


def test_pipeline_passes_each_answer_and_the_original_request_down_the_chain(
    dispatcher: Dispatcher,
) -> None:
    handle = dispatcher.submit(unique("Write a brief on message brokers"), pattern="pipeline")
    outcome = handle.wait(60)

    assert outcome.status == "done"
    steps = handle.trace()
    assert [s.agent for s in steps] == ["research", "drafter", "critic"]
    handoff = steps[1].message["payload"]
    assert handoff["text"] == steps[0].message["payload"]["text"]
    assert set(handoff["context"]) == {"research", "drafter"}
    assert outcome.message.sender == "critic"
    assert [m.depth for m in handle.messages()] == [0, 1, 2, 3]


def test_pipeline_steps_are_configurable(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit(
        unique("Condense the findings"), pattern="pipeline", steps=["research", "summarizer"]
    )
    assert handle.wait(60).status == "done"
    assert [s.agent for s in handle.trace()] == ["research", "summarizer"]


def test_pipeline_stops_at_the_first_failed_step_with_its_error(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Write a brief on queues")
    script_model(text, [{"text": "prose"}, {"text": "more prose"}])

    handle = dispatcher.submit(text, pattern="pipeline")
    outcome = handle.wait(60)

    assert outcome.status == "failed"
    assert outcome.result["code"] == "invalid_output"
    assert outcome.result["agent"] == "research"
    assert [s.agent for s in handle.trace()] == ["research"]  # nobody else was called


def test_fanout_analyses_aspects_in_parallel_and_merges_with_a_contradictions_field(
    dispatcher: Dispatcher,
) -> None:
    handle = dispatcher.submit(
        unique("Should we move billing to event sourcing?"), pattern="fanout"
    )
    outcome = handle.wait(60)

    assert outcome.status == "done"
    merged = MergedAnalysis.model_validate(outcome.result)
    assert isinstance(merged.contradictions, list)
    steps = handle.trace()
    branches = [s for s in steps if s.agent == "research"]
    assert len(branches) == 3
    assert steps[-1].agent == "merger"
    assert [b["name"] for b in steps[-1].branches or []] == ["technical", "business", "risks"]


def test_fanout_takes_any_aspects(dispatcher: Dispatcher) -> None:
    aspects = [("legal", "Check the legal side."), ("people", "Check the staffing side.")]
    handle = dispatcher.submit(
        unique("Open an office in Lisbon"), pattern="fanout", aspects=aspects
    )
    handle.wait(60)
    assert [b["name"] for b in handle.trace()[-1].branches or []] == ["legal", "people"]


def test_a_failed_branch_does_not_stop_the_merge_which_knows_it_failed(
    dispatcher: Dispatcher, inject_faults: Callable[..., None]
) -> None:
    inject_faults(schedule=["spend_limit"])  # the first branch call fails for good

    handle = dispatcher.submit(unique("Assess the data platform"), pattern="fanout")
    outcome = handle.wait(60)

    assert outcome.status == "done"
    merger = handle.trace()[-1]
    assert merger.agent == "merger"
    statuses = sorted(b["status"] for b in merger.branches or [])
    assert statuses == ["error", "ok", "ok"]
    failed = [s for s in handle.trace() if s.agent == "research" and s.status == "error"]
    assert failed[0].message["payload"]["code"] == "model_error"


def test_consensus_with_agreeing_analysts_is_done(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Approve the migration plan?")
    script_model(text, [verdict("APPROVE")] * 3 + [judgement("APPROVE", 0.9)])

    handle = dispatcher.submit(text, pattern="consensus")
    outcome = handle.wait(60)

    assert outcome.status == "done"
    assert Judgement.model_validate(outcome.result).consensus == "APPROVE"
    assert [b["status"] for b in handle.trace()[-1].branches or []] == ["ok"] * 3
    assert handle.task_id not in {r.task_id for r in dispatcher.reviews.list()}


def test_a_split_verdict_waits_for_a_human_and_approval_completes_it(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Approve the vendor contract?")
    votes = [verdict("APPROVE"), verdict("REJECT"), verdict("UNCERTAIN")]
    script_model(text, [*votes, judgement("SPLIT", 0.4)])

    handle = dispatcher.submit(text, pattern="consensus")
    outcome = handle.wait(60)

    assert outcome.status == "needs_review"
    pending = {r.task_id: r for r in dispatcher.reviews.list()}
    assert handle.task_id in pending
    assert "SPLIT" in pending[handle.task_id].summary

    dispatcher.reviews.approve(handle.task_id, note="Budget owner agrees", reviewer="dana")

    status = handle.status()
    assert status["status"] == "done"
    assert (status["review_decision"], status["review_note"]) == ("approved", "Budget owner agrees")
    assert status["reviewer"] == "dana"
    assert handle.task_id not in {r.task_id for r in dispatcher.reviews.list()}
    assert handle.wait(5).status == "done"


def test_low_confidence_also_goes_to_review_and_can_be_rejected(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Approve the hiring plan?")
    script_model(text, [verdict("APPROVE")] * 3 + [judgement("APPROVE", 0.3)])

    handle = dispatcher.submit(text, pattern="consensus", review_below=0.5)
    assert handle.wait(60).status == "needs_review"

    dispatcher.reviews.reject(handle.task_id, note="Too uncertain", reviewer="ops")
    assert handle.status()["status"] == "rejected"


def test_consensus_without_quorum_ends_with_an_error_that_says_so(
    dispatcher: Dispatcher, inject_faults: Callable[..., None]
) -> None:
    inject_faults(schedule=["spend_limit", "spend_limit"])

    handle = dispatcher.submit(unique("Approve the roadmap?"), pattern="consensus")
    outcome = handle.wait(60)

    assert outcome.status == "failed"
    assert outcome.result["code"] == "quorum_not_met"
    assert "only 1 of 3 branches answered; 2 needed" in outcome.result["message"]
    judge = handle.trace()[-1]
    assert (judge.agent, judge.attempts) == ("judge", 0)  # the judge was not asked


def draft(title: str) -> dict[str, Any]:
    return {"tool_input": {"title": title, "body": f"{title} body", "key_claims": []}}


def critique(verdict_: str) -> dict[str, Any]:
    return {
        "tool_input": {
            "verdict": verdict_,
            "strengths": ["clear"],
            "weaknesses": [] if verdict_ == "pass" else ["too vague"],
            "reasons": f"{verdict_} it",
        }
    }


def test_evaluator_optimizer_revises_until_the_critic_passes(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Write the launch announcement")
    script_model(text, [draft("v1"), critique("revise"), draft("v2"), critique("pass")])

    handle = dispatcher.submit(text, pattern="evaluate", max_rounds=3)
    outcome = handle.wait(60)

    assert outcome.status == "done"
    final = EvaluatedDraft.model_validate(outcome.result)
    assert (final.draft.title, final.rounds, final.accepted) == ("v2", 2, True)
    assert [s.agent for s in handle.trace()] == ["drafter", "critic", "drafter", "critic"]


def test_evaluator_optimizer_stops_after_the_last_round(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Write the incident summary")
    script_model(text, [draft("only"), critique("revise")])

    outcome = dispatcher.submit(text, pattern="evaluate", max_rounds=1).wait(60)

    final = EvaluatedDraft.model_validate(outcome.result)
    assert (final.rounds, final.accepted) == (1, False)


def test_orchestrator_splits_at_run_time_within_the_bound_and_a_synthesizer_merges(
    dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Plan the datacenter exit")
    plan = {
        "subtasks": [
            {"name": "Inventory", "instructions": "List every service."},
            {"name": "Costs", "instructions": "Estimate the cloud bill."},
        ]
    }
    script_model(text, [{"tool_input": plan}])

    handle = dispatcher.submit(text, pattern="orchestrate", max_subtasks=2)
    outcome = handle.wait(60)

    assert outcome.status == "done"
    Synthesis.model_validate(outcome.result)
    steps = handle.trace()
    assert steps[0].agent == "orchestrator"
    assert sorted(s.agent for s in steps[1:-1]) == ["research", "research"]
    assert [b["name"] for b in steps[-1].branches or []] == ["1_inventory", "2_costs"]


def test_a_plan_over_the_bound_is_refused(dispatcher: Dispatcher, script_model: Script) -> None:
    text = unique("Plan the office move")
    too_many = {"subtasks": [{"name": f"s{i}", "instructions": "x"} for i in range(4)]}
    script_model(text, [{"tool_input": too_many}, {"tool_input": too_many}])

    outcome = dispatcher.submit(text, pattern="orchestrate", max_subtasks=3).wait(60)

    assert outcome.status == "failed"
    assert outcome.result["code"] == "invalid_output"
    assert "subtasks" in outcome.result["message"]
