"""`chorus metrics`: Prometheus counters per agent and model, and honest queue lengths."""

from __future__ import annotations

import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, free_port, wait_until
from dispatcher.metrics import collect
from tests.helpers import with_db
from workers.app import create_app
from workers.settings import Settings
from workers.state import StepRecord, TaskState


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

    wait_until(up, timeout=60, what="the metrics exporter")
    yield url
    process.stop()


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        return samples_of(answer.read().decode())


def samples_of(text: str) -> dict[str, float]:
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
        wait_until(lambda: _answers(url), timeout=60, what="the metrics exporter")
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


def test_the_collector_turns_the_fleets_counters_into_metric_families(
    stack_env: dict[str, str],
) -> None:
    """No workers: steps recorded straight into a database of their own, then one scrape."""
    client = redis.Redis.from_url(with_db(stack_env, 12)["CHORUS_REDIS_URL"])
    client.flushdb()
    state = TaskState(client, ttl=60)
    for number, (status, seconds) in enumerate([("ok", 0.3), ("ok", 7.0), ("error", 200.0)]):
        state.record_step(
            StepRecord(
                task_id="t-metrics",
                input_message_id=f"in-{number}",
                agent="judge",
                status=status,
                message={"payload": {"code": "invalid_output"}},
                model="claude-sonnet-5-5",
                attempts=2,
                usage={"input_tokens": 100, "output_tokens": 10},
                cost_micro_usd=1_500,
                latency_ms=seconds * 1000,
            ),
            final_status=None,
        )
    text = collect(client)
    samples = samples_of(text)

    def value(metric: str, **labels: str) -> float:
        return total(samples, metric, agent="judge", **labels)

    assert "# TYPE chorus_steps_total counter" in text
    assert "# TYPE chorus_step_latency_seconds histogram" in text
    assert value("chorus_steps_total", model="claude-sonnet-5-5", status="ok") == 2
    assert value("chorus_model_calls_total") == 6
    assert value("chorus_cost_usd_total") == pytest.approx(0.0045)
    assert value("chorus_errors_total", code="invalid_output") == 1
    assert value("chorus_step_latency_seconds_bucket", le="0.5") == 1
    assert value("chorus_step_latency_seconds_bucket", le="10") == 2
    assert value("chorus_step_latency_seconds_bucket", le="+Inf") == 3
    assert value("chorus_step_latency_seconds_count") == 3
    assert value("chorus_step_latency_seconds_sum") == pytest.approx(207.3)
    assert total(samples, "chorus_queue_length", agent="router", priority="0") == 0
