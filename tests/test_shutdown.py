"""Warm shutdown: SIGTERM lets a worker finish the model calls it has started; nothing is lost."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from dispatcher import Dispatcher
from dispatcher.embedded import start_simulator, start_worker, wait_until
from tests.helpers import with_db
from workers.app import create_app
from workers.settings import Settings


def test_sigterm_finishes_in_flight_calls_before_the_worker_exits(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    simulator, url = start_simulator(log_dir, latency=3.0)
    env = {**with_db(stack_env, 12), "ANTHROPIC_BASE_URL": url}
    redis.Redis.from_url(env["CHORUS_REDIS_URL"]).flushdb()
    worker = start_worker(["summarizer"], env, log_dir, concurrency=8)
    try:
        dispatcher = Dispatcher(create_app(Settings.from_env(env)))
        wait_until(
            lambda: "agent.summarizer" in dispatcher.consumed_queues(0.5),
            timeout=30,
            what="the worker",
        )
        handles = [
            dispatcher.submit(
                f"Summarize shift report {n}", pattern="pipeline", steps=["summarizer"]
            )
            for n in range(5)
        ]
        wait_until(
            lambda: all(h.status().get("status") == "running" for h in handles),
            timeout=15,
            what="the calls to start",
        )
        worker.process.send_signal(signal.SIGTERM)  # warm shutdown, as docker stop / k8s send

        outcomes = [h.wait(30) for h in handles]
        assert worker.process.wait(30) == 0
        assert [o.status for o in outcomes] == ["done"] * 5
        assert all(o.retries == 0 for o in outcomes)
        log = worker.log_path.read_text()
        assert "worker: Warm shutdown" in log
    finally:
        worker.stop()
        simulator.stop()
