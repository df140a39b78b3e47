"""Real parts only: a Redis server on a free port, the simulator over HTTP, worker processes.

Nothing here may reach the real Anthropic API: the test process refuses to resolve its hosts,
and child processes get a dead HTTPS proxy (the simulator is plain HTTP on loopback).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import Dispatcher
from dispatcher.embedded import (
    ManagedProcess,
    start_redis,
    start_simulator,
    start_worker,
    stop_all,
    wait_until,
)
from workers.app import ChorusApp, create_app
from workers.registry import AGENTS
from workers.settings import Settings

TEST_API_KEY = "sk-ant-test-0123456789-never-log-me"
"""Looks like a real key so leak checks are meaningful; only the simulator ever sees it."""

REAL_API_HOSTS = ("anthropic.com", "claude.ai")

_real_getaddrinfo = socket.getaddrinfo
_blocked: list[str] = []


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, str | bytes):
        name = host.decode() if isinstance(host, bytes) else host
        if any(name == h or name.endswith("." + h) for h in REAL_API_HOSTS):
            _blocked.append(name)
            raise OSError(f"tests must not reach the real Anthropic API ({name})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_real_anthropic_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that tries to resolve the real API's hosts."""
    _blocked.clear()
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield
    if _blocked:
        pytest.fail(f"test tried to reach the real Anthropic API: {sorted(set(_blocked))}")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_url(log_dir: Path) -> Iterator[str]:
    process, url = start_redis(log_dir)
    yield url
    process.stop()


@pytest.fixture(scope="session")
def simulator_url(log_dir: Path) -> Iterator[str]:
    process, url = start_simulator(log_dir)
    yield url
    process.stop()


@pytest.fixture(scope="session")
def stack_env(redis_url: str, simulator_url: str, database_url: str) -> dict[str, str]:
    """Environment for producers and workers: test Redis, simulator, no way out to the API."""

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(
        CHORUS_REDIS_URL=redis_url,
        CHORUS_DATABASE_URL=database_url,
        ANTHROPIC_BASE_URL=simulator_url,
        ANTHROPIC_API_KEY=TEST_API_KEY,
        HTTPS_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture(scope="session")
def app(settings: Settings) -> ChorusApp:
    return create_app(settings)


@pytest.fixture(scope="session")
def workers(
    stack_env: dict[str, str], log_dir: Path, app: ChorusApp
) -> Iterator[list[ManagedProcess]]:
    """One worker process per agent, as in production."""
    started = [start_worker([name], stack_env, log_dir, concurrency=8) for name in AGENTS]
    dispatcher = Dispatcher(app)
    wanted = {spec.queue for spec in AGENTS.values()}

    def ready() -> bool:
        dead = [w for w in started if not w.alive()]
        if dead:
            raise RuntimeError(f"{dead[0].name} died:\n{dead[0].log_tail()}")
        return wanted <= dispatcher.consumed_queues(timeout=0.5)

    wait_until(ready, timeout=120, what="agent workers")  # eleven processes starting at once
    yield started
    stop_all(started)


@pytest.fixture
def dispatcher(app: ChorusApp, workers: list[ManagedProcess]) -> Dispatcher:
    return Dispatcher(app)


@pytest.fixture
def worker_logs(workers: list[ManagedProcess]) -> Callable[[], str]:
    return lambda: "\n".join(w.log_path.read_text(errors="replace") for w in workers)


@pytest.fixture
def script_model(simulator_url: str) -> Iterator[Callable[[str, list[dict[str, Any]]], None]]:
    """Make the simulator answer requests containing `match` with the given responses."""
    import json
    import urllib.request

    def add(match: str, responses: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{simulator_url}/_sim/scripts",
            data=json.dumps({"match": match, "responses": responses}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200

    yield add
    clear = urllib.request.Request(f"{simulator_url}/_sim/scripts", method="DELETE")
    with urllib.request.urlopen(clear, timeout=5):
        pass


def sim_request(url: str, method: str = "GET", body: object | None = None) -> Any:
    import json
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture
def inject_faults(simulator_url: str) -> Iterator[Callable[..., None]]:
    """Set the shared simulator's fault rates for one test; back to none afterwards."""

    def apply(**plan: Any) -> None:
        sim_request(f"{simulator_url}/_sim/faults", "POST", plan)

    yield apply
    apply(rates={}, schedule=[])


@pytest.fixture
def ledger(simulator_url: str) -> Callable[[str], dict[str, Any]]:
    """What the simulator billed for one task (calls are tagged with metadata.user_id)."""
    from urllib.parse import quote

    def report(task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = sim_request(
            f"{simulator_url}/_sim/ledger?user_id={quote(task_id)}"
        )
        return result

    return report


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The audit trail's database: CHORUS_TEST_DATABASE_URL (PostgreSQL in CI) in a schema of
    its own that is dropped afterwards, else a fresh SQLite file."""
    import sqlalchemy as sa

    base = os.environ.get("CHORUS_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path_factory.mktemp('audit') / 'audit.sqlite3'}"
        return
    schema = f"chorus_test_{os.getpid()}"
    engine = sa.create_engine(base)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def auditor(stack_env: dict[str, str], log_dir: Path) -> Iterator[ManagedProcess]:
    """One `chorus auditor` process draining the test Redis's audit stream into SQL."""
    from dispatcher.embedded import start_auditor

    process = start_auditor(stack_env, log_dir)
    yield process
    process.stop()


_CHAOS_REPORT: dict[str, Any] = {}


@pytest.fixture(scope="session")
def chaos_report() -> dict[str, Any]:
    """Figures the chaos tests fill in; printed at the end of the run."""
    return _CHAOS_REPORT


_CHAOS_TABLES: list[list[str]] = []


@pytest.fixture(scope="session")
def chaos_tables() -> list[list[str]]:
    """Tables the chaos tests fill in (one per fault, a row per pattern); printed at the end."""
    return _CHAOS_TABLES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write = terminalreporter.write_line
    for lines in _CHAOS_TABLES:
        write("")
        for line in lines:
            write(line)
    if not _CHAOS_REPORT:
        return
    write("")
    write("chaos figures (tasks lost and double counts must be 0):")
    for scenario, figures in _CHAOS_REPORT.items():
        details = ", ".join(f"{k} {v}" for k, v in figures.items())
        write(f"  {scenario}: {details}")
