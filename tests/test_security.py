"""Security settings the README recommends, exercised for real: a Redis whose default user is off
and whose Chorus user may not run dangerous commands still runs the whole fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_redis, start_worker, wait_until
from workers.app import create_app
from workers.registry import AGENTS
from workers.settings import Settings

CHORUS_ACL = ["on", ">chorus-test-password", "~*", "&*", "+@all", "-@dangerous"]
"""The README's ACL for the Chorus user: every key and channel, no admin or dangerous command."""


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    server, url = start_redis(
        tmp_path,
        extra_args=["--user", "default", "off", "--user", "chorus", *CHORUS_ACL],
        url_auth="chorus:chorus-test-password@",
    )
    yield server, url
    server.stop()


def test_the_fleet_runs_on_an_acl_user_without_dangerous_commands(
    acl_redis: tuple[ManagedProcess, str], stack_env: dict[str, str], log_dir: Path
) -> None:
    _, url = acl_redis
    anonymous = url.replace("chorus:chorus-test-password@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(anonymous).ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(url).execute_command("KEYS", "*")

    env = {**stack_env, "CHORUS_REDIS_URL": url}
    worker = start_worker(list(AGENTS), env, log_dir, concurrency=8)
    try:
        dispatcher = Dispatcher(create_app(Settings.from_env(env)))
        wanted = {spec.queue for spec in AGENTS.values()}
        wait_until(lambda: wanted <= dispatcher.consumed_queues(0.5), timeout=120, what="workers")
        for pattern in ("route", "consensus"):
            outcome = dispatcher.submit("Summarize the ACL policy", pattern=pattern).wait(60)
            assert outcome.status in {"done", "needs_review"}, outcome
        assert "NOPERM" not in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
