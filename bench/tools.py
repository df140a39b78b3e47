"""Tool-loop overhead: a 3-turn loop (two tool turns, then the answer) through Chorus's runner
against the same loop through the anthropic SDK's own `client.beta.messages.tool_runner`, both
on one simulator in the same run.

Chorus's loop does per turn what the raw runner does not: a budget hold and settlement, the
fleet rate limiter, the journal write of the turn and of each tool result (and the step's begin
and record around the loop). The figure is the extra wall time per model turn, and the ratio
of the two loops' times. Both run in this process, one loop at a time, with the same scripted
turns (a marker per loop), so only the framework differs.

    .venv/bin/python -m bench.tools [--loops 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import anthropic
from anthropic import beta_tool
from pydantic import BaseModel

from dispatcher.embedded import start_redis, start_simulator
from messages import AgentMessage
from workers.registry import AgentSpec
from workers.runner import Delivery, run_agent
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tools import tool_from_function

TURNS = 3
MODEL = "claude-haiku-5-5"
SYSTEM = "You are the bench scout: look things up with your tools, then answer."


class Answer(BaseModel):
    answer: str


def lookup(topic: str) -> str:
    """Look a topic up in the notes.

    Args:
        topic: What to look up.
    """
    return f"notes on {topic}"


def _script(url: str, marker: str) -> None:
    turns = [
        {"tool_calls": [{"name": "lookup", "input": {"topic": f"{marker} a"}}]},
        {"tool_calls": [{"name": "lookup", "input": {"topic": f"{marker} b"}}]},
        {"tool_input": {"answer": f"found {marker}"}},
    ]
    body = json.dumps({"match": marker, "responses": turns}).encode()
    request = urllib.request.Request(f"{url}/_sim/scripts", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def _chorus_loop(runtime: Runtime, spec: AgentSpec, url: str) -> float:
    marker = f"bench-{uuid.uuid4().hex[:10]}"
    _script(url, marker)
    root = AgentMessage.root(recipient=spec.name, payload={"text": f"Look up {marker}"})
    runtime.state.submit(root.task_id, pattern="route", root_message=root.to_dict())
    started = time.perf_counter()
    outcome = run_agent(runtime, spec, root.to_dict(), Delivery())
    elapsed = time.perf_counter() - started
    if outcome.record is None or outcome.record.attempts != TURNS:
        raise RuntimeError(f"chorus loop did not take {TURNS} turns: {outcome.message.payload}")
    return elapsed


def _sdk_loop(client: anthropic.Anthropic, tool: Any, url: str) -> float:
    marker = f"bench-{uuid.uuid4().hex[:10]}"
    _script(url, marker)
    started = time.perf_counter()
    runner = client.beta.messages.tool_runner(
        model=MODEL,
        max_tokens=1024,
        system=SYSTEM,
        tools=[tool],
        messages=[{"role": "user", "content": f"Look up {marker}"}],
        # The whole conversation every turn, as Chorus sends it (and the simulator keeps no
        # server-held threads, the runner's default).
        thread=False,
    )
    turns = sum(1 for _message in runner)
    elapsed = time.perf_counter() - started
    if turns != TURNS:
        raise RuntimeError(f"tool_runner took {turns} turns, not {TURNS}")
    return elapsed


def run(loops: int, *, work: Path, redis_url: str | None = None) -> dict[str, float]:
    """Median seconds per turn of each loop, the overhead per turn and the ratio."""
    server = None
    if redis_url is None:
        server, redis_url = start_redis(work)
    simulator, url = start_simulator(work)
    settings = Settings.from_env(
        {
            "CHORUS_REDIS_URL": redis_url,
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "CHORUS_AUDIT": "0",
        }
    )
    runtime = Runtime(settings)
    spec = AgentSpec(
        name="scout",
        purpose="bench",
        system_prompt=SYSTEM,
        tier="fast",
        output_model=Answer,
        model=MODEL,
        tools=(tool_from_function(lookup),),
    )
    client = anthropic.Anthropic(base_url=url, api_key="sk-ant-bench", max_retries=0)
    tool = beta_tool(lookup)
    try:
        for _ in range(max(3, loops // 10)):  # warm connections, caches and script loading
            _chorus_loop(runtime, spec, url)
            _sdk_loop(client, tool, url)
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(loops):  # interleaved, so drift in the machine's load hits both alike
            ours.append(_chorus_loop(runtime, spec, url) / TURNS)
            theirs.append(_sdk_loop(client, tool, url) / TURNS)
    finally:
        client.close()
        runtime.claude.close()
        simulator.stop()
        if server is not None:
            server.stop()
    chorus, sdk = statistics.median(ours), statistics.median(theirs)
    return {
        "loops": loops,
        "chorus_turn_ms": chorus * 1000,
        "sdk_turn_ms": sdk * 1000,
        "overhead_turn_ms": (chorus - sdk) * 1000,
        "ratio": chorus / sdk,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loops", type=int, default=100)
    args = parser.parse_args(argv)
    result = run(args.loops, work=Path(tempfile.mkdtemp(prefix="chorus-bench-tools-")))
    print(
        f"3-turn tool loop, median per model turn over {result['loops']} loops: chorus "
        f"{result['chorus_turn_ms']:.2f} ms, SDK tool_runner {result['sdk_turn_ms']:.2f} ms, "
        f"overhead {result['overhead_turn_ms']:.2f} ms/turn, ratio {result['ratio']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
