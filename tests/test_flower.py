"""`chorus flower` against the test Redis and the real agent workers, over HTTP and in a browser.

Flower learns about tasks only from events, so each check polls until Flower has caught up.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import ProxyHandler, Request, build_opener

import pytest

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, free_port, wait_until
from dispatcher.flower import flower_command
from messages import ChorusError
from workers.app import ChorusApp
from workers.registry import AGENTS

USER = "chorus-ops"
PASSWORD = "flower-pw-0123456789-never-print-me"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_PACKAGE = "chromium"

_no_proxy = build_opener(ProxyHandler({}))


@dataclass(frozen=True)
class Flower:
    url: str
    process: ManagedProcess


def http_get(url: str, auth: tuple[str, str] | None = (USER, PASSWORD)) -> tuple[int, Any]:
    """Status and decoded JSON (None if the body is not JSON); no proxies from the env."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        with _no_proxy.open(Request(url, headers=headers), timeout=10) as answer:
            status, body = answer.status, answer.read()
    except HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def start_flower(
    name: str, env: dict[str, str], log_dir: Path, *extra: str
) -> tuple[ManagedProcess, str]:
    port = free_port()
    argv = [sys.executable, "-m", "dispatcher.cli", "flower", "--port", str(port), *extra]
    process = ManagedProcess(f"{name}-{port}", argv, env, log_dir)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(f"chorus flower exited:\n{process.log_tail()}")
        try:
            return http_get(f"{url}/healthcheck", auth=None)[0] == 200
        except (URLError, OSError):
            return False

    wait_until(up, timeout=60, what="Flower to answer")
    return process, url


def agent_nodes(app: ChorusApp) -> dict[str, set[str]]:
    """Agent name -> the worker nodes consuming its queue, as the workers themselves report."""
    replies = app.control.inspect(timeout=2).active_queues() or {}
    nodes: dict[str, set[str]] = {name: set() for name in AGENTS}
    for node, queues in replies.items():
        for name, spec in AGENTS.items():
            if any(queue["name"] == spec.queue for queue in queues):
                nodes[name].add(node)
    return nodes


@pytest.fixture(scope="module")
def nodes(app: ChorusApp, workers: list[ManagedProcess]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def every_agent_has_a_node() -> bool:
        found.update(agent_nodes(app))
        return all(found.values())

    wait_until(every_agent_has_a_node, timeout=90, what="every agent's worker to answer inspect")
    return found


@pytest.fixture(scope="module")
def flower(
    stack_env: dict[str, str], log_dir: Path, nodes: dict[str, set[str]]
) -> Iterator[Flower]:
    """`chorus flower` with basic auth from FLOWER_BASIC_AUTH, once it receives the workers'
    events (heartbeats), so no task event sent afterwards is missed."""
    env = {**stack_env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    process, url = start_flower("flower", env, log_dir)
    expected = set().union(*nodes.values())

    def hears_every_worker() -> bool:
        status, body = http_get(f"{url}/workers?json=1")
        alive = {w["hostname"] for w in (body or {}).get("data", []) if w.get("status")}
        return status == 200 and expected <= alive

    try:
        wait_until(hears_every_worker, timeout=60, what="Flower to receive every worker's events")
        yield Flower(url, process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def task_ids(flower: Flower, app: ChorusApp, workers: list[ManagedProcess]) -> list[str]:
    """A routed request and a pipeline, run while Flower watches."""
    dispatcher = Dispatcher(app)
    handles = [
        dispatcher.submit("Summarize the tradeoffs of Redis as a message broker"),
        dispatcher.submit("Research how prompt caching changes cost", pattern="pipeline"),
    ]
    for handle in handles:
        assert handle.wait(60).status == "done"
    return [handle.task_id for handle in handles]


def test_api_workers_lists_every_agent_worker(flower: Flower, nodes: dict[str, set[str]]) -> None:
    listed: dict[str, Any] = {}

    def complete() -> bool:
        status, body = http_get(f"{flower.url}/api/workers?refresh=1")
        listed.clear()
        listed.update(body if status == 200 and body else {})
        return all(agent_nodes & listed.keys() for agent_nodes in nodes.values())

    wait_until(complete, timeout=90, what="/api/workers to list every agent worker")
    for name, agent_nodes in nodes.items():
        for node in agent_nodes & listed.keys():
            assert node.startswith(f"{name}.")
            queues = {q["name"] for q in listed[node].get("active_queues", [])}
            assert AGENTS[name].queue in queues


def test_api_queue_lengths_list_every_agent_queue(flower: Flower) -> None:
    wanted = {spec.queue for spec in AGENTS.values()}
    seen: set[str] = set()

    def complete() -> bool:
        status, body = http_get(f"{flower.url}/api/queues/length")
        if status == 200 and body:
            seen.update(q["name"] for q in body.get("active_queues", []))
        return wanted <= seen

    wait_until(complete, timeout=30, what=f"/api/queues/length to list {sorted(wanted)}")


def test_api_tasks_lists_the_tasks_just_run_with_their_sent_events(
    flower: Flower, task_ids: list[str]
) -> None:
    tasks: dict[str, Any] = {}

    def caught_up() -> bool:
        status, body = http_get(f"{flower.url}/api/tasks")
        tasks.clear()
        tasks.update(body if status == 200 and body else {})
        return all(tasks.get(tid, {}).get("state") == "SUCCESS" for tid in task_ids)

    wait_until(caught_up, timeout=30, what=f"/api/tasks to show {task_ids} succeeded")
    for task_id in task_ids:
        task = tasks[task_id]
        assert task["name"].startswith("chorus.agent.")
        assert task["sent"] is not None  # task_send_sent_event: seen before a worker took it
        assert task["worker"]
    names = {task["name"] for task in tasks.values()}
    # route: router replaced by the summarizer under the same id; pipeline: one task per step
    assert {f"chorus.agent.{a}" for a in ("summarizer", "research", "drafter", "critic")} <= names


@pytest.mark.parametrize(
    "auth", [None, (USER, "wrong-password"), ("intruder", PASSWORD)], ids=["none", "pw", "user"]
)
@pytest.mark.parametrize("path", ["/api/workers", "/api/tasks", "/api/queues/length", "/workers"])
def test_requests_without_the_right_credentials_get_401(
    flower: Flower, path: str, auth: tuple[str, str] | None
) -> None:
    status, _ = http_get(f"{flower.url}{path}", auth=auth)
    assert status == 401


def test_the_password_is_never_printed_or_on_a_command_line(flower: Flower) -> None:
    log = flower.process.log_path.read_text(errors="replace")
    assert f"basic auth for {USER}" in log
    assert PASSWORD not in log
    assert PASSWORD not in " ".join(map(str, flower.process.process.args))
    cmdline = Path(f"/proc/{flower.process.process.pid}/cmdline")
    if cmdline.exists():  # chorus exec'd Flower: same pid, Flower's argv
        argv = cmdline.read_bytes().decode(errors="replace")
        assert "flower" in argv
        assert PASSWORD not in argv


def test_chorus_flower_refuses_to_start_without_auth(stack_env: dict[str, str]) -> None:
    env = {k: v for k, v in stack_env.items() if not k.startswith("FLOWER_")}
    base = [sys.executable, "-m", "dispatcher.cli", "flower", "--port", str(free_port())]
    cases = {
        "no auth": ([], "needs basic auth"),
        "no auth on every interface": (["--no-auth", "--address", "0.0.0.0"], "loopback"),
        "no password": (["--basic-auth", USER], "user:password"),
    }
    for case, (extra, message) in cases.items():
        done = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, case
        assert message in done.stderr, case


def test_no_auth_is_allowed_on_loopback_only_and_opens_the_api(
    stack_env: dict[str, str], log_dir: Path, workers: list[ManagedProcess]
) -> None:
    env = {k: v for k, v in stack_env.items() if not k.startswith("FLOWER_")}
    process, url = start_flower("flower-noauth", env, log_dir, "--no-auth")
    try:
        status, body = http_get(f"{url}/api/queues/length", auth=None)
        assert status == 200
        assert "active_queues" in body
    finally:
        process.stop()


def test_flower_command_keeps_secrets_in_the_environment() -> None:
    command = flower_command(
        {"CHORUS_REDIS_URL": "redis://:redis-pw@127.0.0.1:6390/0"},
        port=5600,
        basic_auth=f"{USER}:{PASSWORD}",
    )
    assert command.argv[1:] == [
        "-m",
        "celery",
        "-A",
        "workers.app",
        "flower",
        "--port=5600",
        "--address=127.0.0.1",
    ]
    assert command.env["FLOWER_BASIC_AUTH"] == f"{USER}:{PASSWORD}"
    assert command.env["CELERY_BROKER_URL"] == "redis://:redis-pw@127.0.0.1:6390/0"
    assert "FLOWER_UNAUTHENTICATED_API" not in command.env
    assert command.users == [USER]


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1"])
def test_no_auth_on_loopback_opens_the_api_explicitly(address: str) -> None:
    env = {"FLOWER_BASIC_AUTH": "a:b"}
    command = flower_command(env, address=address, no_auth=True)
    assert command.env["FLOWER_UNAUTHENTICATED_API"] == "true"
    assert "FLOWER_BASIC_AUTH" not in command.env


@pytest.mark.parametrize("address", ["0.0.0.0", "", "10.0.0.5", "flower.example.com", "::"])
def test_no_auth_elsewhere_is_refused(address: str) -> None:
    with pytest.raises(ChorusError, match="loopback"):
        flower_command({}, address=address, no_auth=True)


def test_an_inherited_unauthenticated_api_flag_is_dropped_when_auth_is_on() -> None:
    command = flower_command({"FLOWER_UNAUTHENTICATED_API": "true"}, basic_auth="a:b")
    assert "FLOWER_UNAUTHENTICATED_API" not in command.env


def dump_dom(url: str, profile: Path, timeout: float = 90) -> tuple[str, str]:
    """The DOM after Flower's scripts ran (virtual time lets its timers fire without waiting),
    and chromium's log, which names a failed page load."""
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(profile)}
    with subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # chromium's helper processes go with it
    ) as browser:
        try:
            out, err = browser.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGKILL)
    return out.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"Debian's chromium is not installed: apt-get install -y {CHROMIUM_PACKAGE}",
)
def test_dashboard_shows_the_agent_workers_in_a_headless_browser(
    flower: Flower, nodes: dict[str, set[str]], tmp_path: Path
) -> None:
    port = flower.url.rsplit(":", 1)[1]
    dom = ""

    def rendered() -> bool:
        nonlocal dom
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/workers"
        dom, _ = dump_dom(url, tmp_path / "profile")
        return all(f'aria-label="Worker {n}"' in dom for ns in nodes.values() for n in ns)

    wait_until(rendered, timeout=120, what="the dashboard to render every agent worker")
    # The rows above are drawn by Flower's JavaScript (DataTables), not the server's HTML.
    assert "workers-table_info" in dom
    for name in AGENTS:
        assert f'title="{name}.' in dom
    assert PASSWORD not in dom


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"Debian's chromium is not installed: apt-get install -y {CHROMIUM_PACKAGE}",
)
@pytest.mark.parametrize("credentials", ["", f"{USER}:wrong-password@"], ids=["none", "wrong"])
def test_dashboard_refuses_a_browser_without_the_right_credentials(
    flower: Flower, nodes: dict[str, set[str]], tmp_path: Path, credentials: str
) -> None:
    port = flower.url.rsplit(":", 1)[1]
    dom, log = dump_dom(f"http://{credentials}127.0.0.1:{port}/workers", tmp_path / "profile")
    assert "ERR_INVALID_AUTH_CREDENTIALS" in log
    for agent_nodes in nodes.values():
        for node in agent_nodes:
            assert node not in dom
