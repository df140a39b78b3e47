"""The transit reaper's look (transit_look.lua) on its own, against a real Redis and no workers:
a message on its way is left alone; one in no queue and no `unacked` hash on two looks far
enough apart goes back on its queue, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from tests.private_redis import private_redis
from workers import keys, transit
from workers.transit import Reaper

QUEUE = "agent.summarizer"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


def published(client: redis.Redis, task_id: str, *, at: float) -> str:
    """What publishing leaves: the ledger entry, and the message on its queue."""
    message = {
        "content-type": "application/json",
        "headers": {"task": "chorus.agent.summarizer", "id": task_id},
        "properties": {"delivery_tag": f"tag-{task_id}", "delivery_info": {}},
        "body": "e30=",
    }
    element = transit.dumps(message)
    entry = json.dumps({"key": QUEUE, "element": element})
    client.hset(keys.TRANSIT, task_id, entry)
    client.zadd(keys.TRANSIT_INDEX, {task_id: at})
    client.lpush(QUEUE, element)
    return element


@pytest.fixture
def reaper(client: redis.Redis) -> Reaper:
    client.flushdb()
    return Reaper(client, grace=10, confirm=5)


def test_a_message_in_its_queue_or_in_a_workers_hands_is_on_its_way(
    reaper: Reaper, client: redis.Redis
) -> None:
    published(client, "held", at=0)
    published(client, "queued", at=0)
    popped = client.rpop(QUEUE)  # "held" was pushed first: a worker took it and recorded it
    client.hset("unacked", "tag-held", popped or b"")

    assert reaper.sweep(now=100)["on_its_way"] == 2
    assert client.zscore(keys.TRANSIT_INDEX, "queued") == 100  # looked at again later


def test_a_message_lost_in_the_brpop_window_is_put_back_after_two_looks(
    reaper: Reaper, client: redis.Redis
) -> None:
    element = published(client, "lost", at=0)
    client.rpop(QUEUE)  # popped by a worker that died before recording it in `unacked`

    assert reaper.sweep(now=100)["suspect"] == 1
    assert reaper.sweep(now=102)["suspect"] == 1  # not `confirm` seconds later yet
    assert client.llen(QUEUE) == 0
    assert reaper.sweep(now=106)["restored"] == 1
    assert client.lrange(QUEUE, 0, -1) == [element.encode()]
    assert client.hget(keys.TRANSIT_RESTORES, "lost") == b"1"


def test_an_entry_received_meanwhile_is_gone(reaper: Reaper, client: redis.Redis) -> None:
    published(client, "received", at=0)
    client.hdel(keys.TRANSIT, "received")
    assert reaper.sweep(now=100)["gone"] == 1
    assert client.zcard(keys.TRANSIT_INDEX) == 0


def test_young_entries_are_not_looked_at(reaper: Reaper, client: redis.Redis) -> None:
    published(client, "young", at=95)
    client.rpop(QUEUE)
    assert sum(reaper.sweep(now=100).values()) == 0
