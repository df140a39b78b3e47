"""A Redis of one test module's own, for tests of the Lua scripts that need no workers.

    @pytest.fixture(scope="module")
    def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
        yield from private_redis(tmp_path_factory)

Each test module flushes it between tests (an autouse fixture of its own).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from dispatcher.embedded import start_redis


def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    server, url = start_redis(tmp_path_factory.mktemp("redis"))
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()
        server.stop()
