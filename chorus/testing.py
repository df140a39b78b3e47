"""Test your own team against a real stack: Redis, the Claude simulator and your workers.

    # conftest.py
    pytest_plugins = ["chorus.testing"]

    @pytest.fixture(scope="session")
    def chorus_app():
        from launch_team import app
        return app

    # test_launch.py
    def test_launch_names_contradictions(chorus_stack):
        chorus_stack.script("editor", {"summary": "ok", "contradictions": ["dates differ"]})
        outcome = chorus_stack.run("Chorus 2.0 ships on Monday", workflow="launch")
        assert outcome.ok and outcome.result["contradictions"] == ["dates differ"]

The stack is started once per session (a private redis-server on a free port, the simulator,
one worker process for all the app's agents) and stopped at the end. `script` pins an agent's
next answers, as pydantic-ai's TestModel and Celery's contrib.testing let you; scripts are
cleared after each test. Nothing here touches a Redis or an API you did not start.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chorus.errors import AppDefinitionError

if TYPE_CHECKING:
    from dispatcher.dispatcher import Dispatcher, TaskHandle, TaskOutcome
    from dispatcher.embedded import ManagedProcess
    from workers.app import ChorusApp


class Stack:
    """A running stack for one app, with the controls a test needs."""

    def __init__(self, app: ChorusApp, env: dict[str, str], simulator_url: str) -> None:
        from dispatcher.dispatcher import Dispatcher
        from workers.settings import Settings

        self.app = app.using(Settings.from_env(env))
        self.env = env
        self.simulator_url = simulator_url
        self.dispatcher: Dispatcher = Dispatcher(self.app)

    def submit(self, text: str, **options: Any) -> TaskHandle:
        return self.dispatcher.submit(text, **options)

    def run(self, text: str, *, timeout: float = 60.0, **options: Any) -> TaskOutcome:
        """Submit and wait: the finished task (its result, status, cost)."""
        return self.submit(text, **options).wait(timeout)

    def script(self, agent: str, *answers: Mapping[str, Any]) -> None:
        """The agent's next answers, in order (each checked against its output model first);
        the simulator's own answers resume when they run out."""
        spec = self.app.team.agent(agent)
        for answer in answers:
            spec.output_model.model_validate(dict(answer))
        self.script_raw(spec.system_prompt, [{"tool_input": dict(a)} for a in answers])

    def script_raw(self, match: str, responses: list[dict[str, Any]]) -> None:
        """Simulator responses for requests containing `match` (see simulator/scripts.py):
        tool calls, prose and malformed answers included."""
        self._sim("/_sim/scripts", "POST", {"match": match, "responses": responses})

    def clear_scripts(self) -> None:
        self._sim("/_sim/scripts", "DELETE")

    def ledger(self, task_id: str) -> dict[str, Any]:
        """What the simulator billed for one task."""
        from urllib.parse import quote

        report: dict[str, Any] = self._sim(f"/_sim/ledger?user_id={quote(task_id)}")
        return report

    def billed_micro_usd(self, task_id: str) -> int:
        """What the simulator's ledger comes to at the app's prices (batch calls at half):
        a task's reported cost must equal it."""
        from workers.models import Usage, cost_micro_usd

        prices = self.app.settings.prices
        total = 0
        for call in self.ledger(task_id)["calls"]:
            usage = Usage(**{k: int(call["usage"].get(k, 0)) for k in Usage.__dataclass_fields__})
            cost = cost_micro_usd(usage, prices[call["model"]])
            total += (cost + 1) // 2 if call.get("batch") else cost
        return total

    def _sim(self, path: str, method: str = "GET", body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.simulator_url}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None


def app_reference(app: ChorusApp) -> tuple[str, str | None]:
    """How a worker process imports `app`: module:attr, and the directory to put on its path."""
    for name, module in list(sys.modules.items()):
        for attr, value in list(vars(module).items()) if module else ():
            if value is app and not name.startswith(("chorus.", "workers.", "__main__")):
                path = getattr(module, "__file__", None)
                root = _import_root(Path(path), name) if path else None
                return f"{name}:{attr}", root
    if app.main == "chorus":
        return "chorus.seed", None
    raise AppDefinitionError(
        f"cannot tell which module defines app {app.main!r}: define it at module level "
        "(app = chorus.App(...)) and return that object from the chorus_app fixture"
    )


def _import_root(path: Path, module: str) -> str:
    root = path.parent
    for _ in range(module.count(".")):
        root = root.parent
    return str(root)


def start_stack(app: ChorusApp, log_dir: Path) -> tuple[dict[str, str], str, list[Any]]:
    from dispatcher.embedded import (
        ManagedProcess,
        celery_worker_argv,
        node_name,
        start_redis,
        start_simulator,
        wait_until,
    )

    redis_process, redis_url = start_redis(log_dir)
    started: list[ManagedProcess] = [redis_process]
    try:
        simulator, simulator_url = start_simulator(log_dir)
        started.append(simulator)
        ref, root = app_reference(app)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
        env.update(
            CHORUS_APP=ref,
            CHORUS_REDIS_URL=redis_url,
            CHORUS_DATABASE_URL=f"sqlite:///{log_dir / 'audit.sqlite3'}",
            ANTHROPIC_BASE_URL=simulator_url,
            ANTHROPIC_API_KEY="chorus-simulator",
        )
        if root:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        queues = ",".join(spec.queue for spec in app.team.agents.values())
        names = list(app.team.agents)
        argv = celery_worker_argv("workers.app", queues, node_name(names[:1]), 8)
        worker = ManagedProcess("worker", argv, env, log_dir)
        started.append(worker)
        stack = Stack(app, env, simulator_url)
        wanted = {spec.queue for spec in app.team.agents.values()}

        def ready() -> bool:
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            return wanted <= stack.dispatcher.consumed_queues(timeout=0.5)

        wait_until(ready, timeout=90, what=f"workers for app {app.main!r}")
        return env, simulator_url, started
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise


@pytest.fixture(scope="session")
def chorus_app() -> ChorusApp:
    """Override in your conftest.py to return your app; the default is CHORUS_APP's."""
    from workers.loading import load_app

    return load_app()


@pytest.fixture(scope="session")
def chorus_session_stack(chorus_app: ChorusApp) -> Iterator[Stack]:
    log_dir = Path(tempfile.mkdtemp(prefix="chorus-test-"))
    chorus_app.validate()
    env, simulator_url, processes = start_stack(chorus_app, log_dir)
    try:
        yield Stack(chorus_app, env, simulator_url)
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.fixture
def chorus_stack(chorus_session_stack: Stack) -> Iterator[Stack]:
    """The session's stack, with this test's scripts cleared afterwards."""
    yield chorus_session_stack
    chorus_session_stack.clear_scripts()
