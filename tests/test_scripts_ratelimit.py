"""The rate limiter's scripts on their own (acquire, refund, observe, pause), against a real
Redis and no workers. Time passing is simulated by moving the bucket's clock back, never by
sleeping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.private_redis import private_redis
from workers import keys, scripts
from workers.ratelimit import FleetRateLimiter, RateLimit

MODEL = "claude-haiku-5-5"
CAPS = {"rpm": 2, "itpm": 1_000, "otpm": 600}
ACQUIRE = scripts.load("acquire")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


@pytest.fixture
def limiter(client: redis.Redis) -> FleetRateLimiter:
    client.flushdb()
    return FleetRateLimiter(client, {MODEL: RateLimit(**CAPS)})


def levels(client: redis.Redis) -> dict[str, float]:
    raw = client.hgetall(keys.bucket(MODEL))
    return {k.decode(): float(v) for k, v in raw.items() if k.startswith(b"lvl_")}


def minutes_pass(client: redis.Redis, minutes: float) -> None:
    """As if the buckets were last touched `minutes` earlier."""
    last = float(client.hget(keys.bucket(MODEL), "ts") or 0)
    client.hset(keys.bucket(MODEL), "ts", str(last - minutes * 60))


def test_a_call_takes_a_request_and_its_tokens(
    limiter: FleetRateLimiter, client: redis.Redis
) -> None:
    assert limiter.acquire(MODEL, 300, 100) == 0
    assert levels(client) == pytest.approx({"lvl_r": 1, "lvl_i": 700, "lvl_o": 500}, abs=0.1)


def test_an_empty_bucket_takes_nothing_and_names_the_wait(
    limiter: FleetRateLimiter, client: redis.Redis
) -> None:
    limiter.acquire(MODEL, 900, 100)
    # The script answers the wait; FleetRateLimiter.acquire would sleep it off.
    wanted = {"requests": 1, "input_tokens": 400, "output_tokens": 1}
    wait = float(ACQUIRE(client, keys={"bucket": keys.bucket(MODEL)}, args={**wanted, **CAPS}))
    assert wait == pytest.approx(300 * 60 / 1_000, rel=0.01)  # 300 input tokens short
    assert levels(client)["lvl_i"] == pytest.approx(100, abs=0.5)  # nothing was taken


def test_buckets_refill_continuously_up_to_their_cap(
    limiter: FleetRateLimiter, client: redis.Redis
) -> None:
    limiter.acquire(MODEL, 1_000, 600)
    minutes_pass(client, 0.5)
    limiter.acquire(MODEL, 0, 0)
    assert levels(client)["lvl_i"] == pytest.approx(500, abs=1)
    minutes_pass(client, 10)
    limiter.acquire(MODEL, 0, 0)
    assert levels(client)["lvl_i"] == pytest.approx(1_000, abs=1)


def test_a_refund_gives_back_the_overestimate_but_never_past_the_cap(
    limiter: FleetRateLimiter, client: redis.Redis
) -> None:
    limiter.acquire(MODEL, 500, 300)
    limiter.refund(MODEL, 200, 250)
    assert levels(client)["lvl_i"] == pytest.approx(700, abs=0.5)
    assert levels(client)["lvl_o"] == pytest.approx(550, abs=0.5)
    limiter.refund(MODEL, 5_000, 0)
    assert levels(client)["lvl_i"] == pytest.approx(1_000, abs=0.5)


def test_the_apis_headers_resize_the_buckets_and_cap_what_is_left(
    limiter: FleetRateLimiter, client: redis.Redis
) -> None:
    limiter.acquire(MODEL, 100, 100)
    limiter.observe(
        MODEL,
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "12",
        },
    )
    bucket = client.hgetall(keys.bucket(MODEL))
    assert (bucket[b"cap_r"], bucket[b"cap_i"]) == (b"50", b"40000")
    assert b"cap_o" not in bucket
    assert levels(client)["lvl_i"] == 12


def test_a_429s_pause_holds_the_whole_fleet(limiter: FleetRateLimiter, client: redis.Redis) -> None:
    limiter.pause(MODEL, 30)
    other_process = FleetRateLimiter(client, {})
    assert 29 < other_process.delay(MODEL) <= 30
    limiter.pause(MODEL, 5)  # a shorter pause does not shorten it
    assert other_process.delay(MODEL) > 29


def test_unknown_limits_are_not_enforced_and_a_switched_off_limiter_does_nothing(
    client: redis.Redis,
) -> None:
    client.flushdb()
    learning = FleetRateLimiter(client, {})
    assert learning.acquire(MODEL, 10**9, 10**9) == 0
    off = FleetRateLimiter(client, {MODEL: RateLimit(rpm=1)}, enabled=False)
    off.pause(MODEL, 60)
    assert off.acquire(MODEL, 1, 1) == 0
    assert off.delay(MODEL) == 0
