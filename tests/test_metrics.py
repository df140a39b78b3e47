"""`chorus metrics`: Prometheus counters per agent and model, and honest queue lengths."""

from __future__ import annotations

import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, free_port, wait_until
from tests.test_cli import with_db
from workers.app import create_app
from workers.settings import Settings


@pytest.fixture
def exporter(stack_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "dispatcher.cli", "metrics", "--port", str(port)]
    process = ManagedProcess(f"metrics-{port}", argv, stack_env, log_dir)
    url = f"http://127.0.0.1:{port}/metrics"

    def up() -> bool:
        try:
            return bool(scrape(url))
        except OSError:
            return False

    wait_until(up, timeout=15, what="the metrics exporter")
    yield url
    process.stop()


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], metric: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for name, value in samples.items()
        if name.startswith(metric + "{") and all(w in name for w in wanted)
    )


def test_counters_per_agent_and_model_add_up_to_what_tasks_cost(
    dispatcher: Dispatcher, exporter: str
) -> None:
    before = scrape(exporter)
    handle = dispatcher.submit("Approve the metrics rollout?", pattern="consensus", review_below=0)
    outcome = handle.wait(60)
    steps = handle.trace()
    after = scrape(exporter)

    def delta(metric: str, **labels: str) -> float:
        return total(after, metric, **labels) - total(before, metric, **labels)

    assert delta("chorus_steps_total", agent="analyst", status="ok") == 3
    assert delta("chorus_steps_total", agent="judge", status="ok") == 1
    assert delta("chorus_model_calls_total", agent="analyst") == sum(
        s.attempts for s in steps if s.agent == "analyst"
    )
    assert delta("chorus_cost_usd_total") == pytest.approx(outcome.cost_micro_usd / 1e6)
    assert (
        delta("chorus_input_tokens_total", agent="judge", model=steps[-1].model or "")
        == (steps[-1].usage["input_tokens"])
    )
    assert delta("chorus_step_latency_seconds_count", agent="analyst") == 3
    inf = total(after, "chorus_step_latency_seconds_bucket", agent="analyst", le="+Inf")
    assert inf == total(after, "chorus_step_latency_seconds_count", agent="analyst")


def test_errors_are_counted_by_stable_code(dispatcher: Dispatcher, exporter: str) -> None:
    before = total(
        scrape(exporter), "chorus_errors_total", agent="summarizer", code="budget_exceeded"
    )
    dispatcher.submit("Summarize", pattern="pipeline", steps=["summarizer"], budget_tokens=10).wait(
        60
    )
    after = total(
        scrape(exporter), "chorus_errors_total", agent="summarizer", code="budget_exceeded"
    )
    assert after == before + 1


def test_queue_length_counts_every_priority_sub_list(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    env = with_db(stack_env, 11)  # no worker consumes this database: messages stay queued
    idle = Dispatcher(create_app(Settings.from_env(env)))
    for priority in ("high", "normal", "low", "low"):
        idle.submit("Summarize the backlog", priority=priority)
    port = free_port()
    argv = [sys.executable, "-m", "dispatcher.cli", "metrics", "--port", str(port)]
    process = ManagedProcess(f"metrics-{port}", argv, env, log_dir)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: _answers(url), timeout=15, what="the metrics exporter")
        samples = scrape(url)
    finally:
        process.stop()
    router = {
        re.search(r'priority="(\d)"', n)[1]: v  # type: ignore[index]
        for n, v in samples.items()
        if n.startswith('chorus_queue_length{agent="router"')
    }
    assert router == {"0": 1, "3": 1, "6": 2, "9": 0}
    assert total(samples, "chorus_queue_length", agent="research") == 0


def _answers(url: str) -> bool:
    try:
        scrape(url)
        return True
    except OSError:
        return False
