"""The `chorus` command as a user runs it: a real subprocess against real Redis and workers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher import Dispatcher
from tests.conftest import TEST_API_KEY
from tests.helpers import chorus, with_db


def test_run_without_workers_fails_fast_and_names_the_command(stack_env: dict[str, str]) -> None:
    done = chorus(["run", "Summarize this", "--json"], with_db(stack_env, 5), timeout=30)

    assert done.returncode == 2
    assert done.stdout == ""
    assert "no worker is consuming agent.router" in done.stderr
    assert "chorus worker router" in done.stderr
    assert "--embedded" in done.stderr


def test_run_without_redis_says_how_to_get_one(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "CHORUS_REDIS_URL": "redis://:secret-pw@127.0.0.1:1/0"}
    done = chorus(["run", "Summarize this"], env, timeout=30)

    assert done.returncode == 2
    assert "cannot reach Redis" in done.stderr
    assert "secret-pw" not in done.stderr


def run_json(stack_env: dict[str, str], *extra: str) -> dict[str, Any]:
    done = chorus(
        ["run", "Summarize the tradeoffs of Redis as a message broker", "--json", *extra],
        stack_env,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def check_document(document: dict[str, Any]) -> None:
    assert document["status"] == "done"
    assert document["pattern"] == "route"
    assert document["result"]["summary"]
    assert document["input_tokens"] > 0
    assert document["output_tokens"] > 0
    assert document["cost_usd"] > 0
    senders = [m["sender"] for m in document["messages"]]
    assert senders == ["producer", "router", "summarizer"]
    assert document["messages"][0]["task_id"] == document["task_id"]
    assert [s["queue"] for s in document["steps"]] == ["agent.router", "agent.summarizer"]


def test_run_json_prints_one_document_with_tokens_cost_and_messages(
    dispatcher: Dispatcher, stack_env: dict[str, str]
) -> None:
    document = run_json(stack_env)
    check_document(document)

    status = chorus(["status", document["task_id"], "--json"], stack_env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "done"


def test_run_embedded_starts_and_stops_its_own_workers_and_simulator(
    stack_env: dict[str, str],
) -> None:
    env = with_db(stack_env, 6)
    del env["ANTHROPIC_API_KEY"], env["ANTHROPIC_BASE_URL"]
    done = chorus(
        ["run", "Summarize the tradeoffs of Redis as a message broker", "--json", "--embedded"],
        env,
    )
    assert done.returncode == 0, done.stderr
    check_document(json.loads(done.stdout))
    assert "using the local simulator" in done.stderr
    assert "workers: one for all agents (router, " in done.stderr  # one interpreter to start
    after = chorus(["run", "Summarize this", "--json"], env, timeout=30)
    assert after.returncode == 2, "embedded workers must be gone after the run"


@pytest.mark.parametrize("command", [["run", "x", "--pattern", "nope"], ["worker"]])
def test_usage_errors_exit_non_zero(command: list[str], stack_env: dict[str, str]) -> None:
    done = chorus(command, stack_env, timeout=30)
    assert done.returncode == 2
    assert TEST_API_KEY not in done.stdout + done.stderr


LONG_DOCUMENT = " ".join(
    f"Paragraph {i}: the broker keeps messages in lists, acknowledges them late, and restores "
    "unacknowledged ones after the visibility timeout, which matters for long model calls."
    for i in range(40)
)


def test_a_repeated_request_costs_less_because_of_cache_reads(
    dispatcher: Dispatcher, stack_env: dict[str, str]
) -> None:
    text = f"Summarize this design note: {LONG_DOCUMENT}"

    def run() -> dict[str, Any]:
        done = chorus(["run", text, "--json"], stack_env)
        assert done.returncode == 0, done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    first, second = run(), run()

    assert first["cache_creation_input_tokens"] > 0
    assert first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cost_usd"] < first["cost_usd"]
    assert all(step["cache_read_input_tokens"] > 0 for step in second["steps"])


@pytest.mark.parametrize(
    ("pattern", "extra", "last_agent"),
    [
        ("pipeline", ["--steps", "research,summarizer"], "summarizer"),
        (
            "fanout",
            ["--aspect", "cost=Look at cost.", "--aspect", "speed=Look at speed."],
            "merger",
        ),
        ("consensus", ["--analysts", "3", "--review-below", "0"], "judge"),
        ("evaluate", ["--max-rounds", "1"], "critic"),
        ("orchestrate", ["--max-subtasks", "2"], "synthesizer"),
    ],
)
def test_run_json_works_for_every_pattern_and_names_it(
    dispatcher: Dispatcher,
    stack_env: dict[str, str],
    pattern: str,
    extra: list[str],
    last_agent: str,
) -> None:
    done = chorus(
        ["run", "Assess the new pricing page", "--json", "--pattern", pattern, *extra], stack_env
    )
    assert done.returncode in (0, 3), done.stderr  # 3: a consensus split waits for review
    document = json.loads(done.stdout)
    assert document["pattern"] == pattern
    assert document["steps"][-1]["agent"] == last_agent
    assert document["cost_usd"] > 0


def test_review_commands_list_show_and_decide(
    dispatcher: Dispatcher, stack_env: dict[str, str], script_model: Any
) -> None:
    text = "Approve the office lease? [cli review case]"
    vote = {"tool_input": {"verdict": "REJECT", "confidence": 0.7, "reasons": ["too long"]}}
    split = {
        "tool_input": {
            "consensus": "SPLIT",
            "confidence": 0.5,
            "key_agreements": [],
            "key_disagreements": ["length"],
            "recommendation": "Ask finance.",
        }
    }
    script_model(text, [vote, vote, vote, split])
    task_id = dispatcher.submit(text, pattern="consensus").wait(60).task_id

    listed = chorus(["review", "list"], stack_env, timeout=30)
    assert task_id in listed.stdout
    shown = json.loads(chorus(["review", "show", task_id], stack_env, timeout=30).stdout)
    assert shown["status"] == "needs_review"
    refused = chorus(["review", "reject", task_id], stack_env, timeout=30)
    assert refused.returncode == 2  # a rejection needs a note
    approved = chorus(["review", "approve", task_id, "--note", "ok"], stack_env, timeout=30)
    assert approved.returncode == 0, approved.stderr
    again = chorus(["review", "approve", task_id], stack_env, timeout=30)
    assert again.returncode == 2
    assert "not waiting for review (status: done)" in again.stderr


def test_trace_shows_the_consensus_tree_with_costs_that_add_up(
    dispatcher: Dispatcher, stack_env: dict[str, str]
) -> None:
    done = chorus(
        [
            "run",
            "Approve the cache rollout?",
            "--json",
            "--pattern",
            "consensus",
            "--review-below",
            "0",
        ],
        stack_env,
    )
    assert done.returncode in (0, 3), done.stderr
    run = json.loads(done.stdout)

    traced = chorus(["trace", run["task_id"], "--json"], stack_env, timeout=30)
    assert traced.returncode == 0, traced.stderr
    trace = json.loads(traced.stdout)
    (root,) = trace["tree"]
    assert (root["sender"], root["recipient"], root["depth"]) == ("producer", "judge", 0)
    analyst_tasks = [c for c in root["children"] if c["recipient"] == "analyst"]
    assert len(analyst_tasks) == 3
    for task in analyst_tasks:
        (answer,) = task["children"]
        assert answer["step"]["agent"] == "analyst"
        assert answer["step"]["cost_micro_usd"] > 0
    judged = [c for c in root["children"] if c.get("step", {}).get("agent") == "judge"]
    assert len(judged) == 1

    def node_costs(node: dict[str, Any]) -> int:
        own = node.get("step", {}).get("cost_micro_usd", 0)
        return int(own) + sum(node_costs(child) for child in node["children"])

    assert node_costs(root) == trace["cost_micro_usd"] == run["cost_micro_usd"]
    assert sum(r["cost_micro_usd"] for r in trace["by_agent"].values()) == run["cost_micro_usd"]
    assert set(trace["by_agent"]) == {"analyst", "judge"}

    text = chorus(["trace", run["task_id"]], stack_env, timeout=30).stdout
    assert "producer → judge  task" in text
    assert text.count("[analyst ok on agent.analyst") == 3
    assert "per model:" in text
