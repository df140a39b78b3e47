"""Shared parts of the tool-loop tests: a Runtime on a private Redis and an in-process simulator,
an agent spec with tools, and the simulator's control endpoints."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import BaseModel, Field

from dispatcher.embedded import start_redis
from messages import AgentMessage
from simulator import BackgroundSimulator
from workers.registry import AgentSpec
from workers.runner import Delivery, Outcome, run_agent
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tools import Tool

API_KEY = "sk-ant-test-tools-0123456789"


class Findings(BaseModel):
    """The scout's answer."""

    answer: str = Field(min_length=1)
    sources: list[str] = Field(default_factory=list)


def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, str]]:
    """A private Redis and simulator, and a Runtime on them (no Celery, no workers)."""
    server, url = start_redis(tmp_path_factory.mktemp("redis"))
    simulator = BackgroundSimulator().start()
    env = {
        "CHORUS_REDIS_URL": url,
        "ANTHROPIC_BASE_URL": simulator.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "CHORUS_CALL_RETRIES": "0",
    }
    runtime = Runtime(Settings.from_env(env))
    try:
        yield runtime, simulator.url
    finally:
        runtime.claude.close()
        simulator.stop()
        server.stop()


def control(url: str, path: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def ledger(url: str, task_id: str) -> dict[str, Any]:
    """What the simulator billed the task: its calls, and `totals` summed over models."""
    report: dict[str, Any] = control(url, f"/_sim/ledger?user_id={quote(task_id)}")
    summed: dict[str, int] = {}
    for per_model in report["totals"].values():
        for name, value in per_model.items():
            summed[name] = summed.get(name, 0) + value
    return {**report, "totals": summed}


def scout(*tools: Tool, max_turns: int = 8) -> tuple[AgentSpec, str]:
    """A tool-using agent whose system prompt carries a marker scripts can match."""
    marker = f"scout-{uuid.uuid4().hex[:8]}"
    spec = AgentSpec(
        name="scout",
        purpose="Looks topics up in the team's notes.",
        system_prompt=f"You are {marker}: look things up with your tools, then answer.",
        tier="fast",
        output_model=Findings,
        tools=tools,
        max_turns=max_turns,
    )
    return spec, marker


def ask(runtime: Runtime, spec: AgentSpec, text: str) -> tuple[AgentMessage, Outcome]:
    root = AgentMessage.root(recipient=spec.name, payload={"text": text})
    runtime.state.submit(root.task_id, pattern="route", root_message=root.to_dict())
    return root, run_agent(runtime, spec, root.to_dict(), Delivery())


def again(runtime: Runtime, spec: AgentSpec, root: AgentMessage) -> Outcome:
    """The same message delivered once more (a redelivery, or a resumed step)."""
    return run_agent(runtime, spec, root.to_dict(), Delivery())
