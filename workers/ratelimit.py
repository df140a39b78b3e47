"""The fleet's rate limiter: token buckets per model, refilled continuously like the API's own.

Every worker process of the fleet takes from the same buckets in Redis (acquire.lua), so twenty
processes stay under one provider limit together. A 429's retry-after pauses the model for the
whole fleet, and the API's anthropic-ratelimit-* headers resize the buckets, so limits need no
configuration against the real API.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis

from workers import keys, scripts

MAX_SLEEP = 2.0
"""Longest single sleep while waiting for a bucket; the wait is re-checked after each."""

HEADER_NAMES = ("requests", "input-tokens", "output-tokens")
"""The anthropic-ratelimit-<name>-limit/-remaining headers, in bucket order."""

_ACQUIRE = scripts.load("acquire")
_REFUND = scripts.load("refund")
_OBSERVE = scripts.load("observe")
_PAUSE = scripts.load("pause")


@dataclass(frozen=True)
class RateLimit:
    """Per-minute limits of one model; 0 means unknown until the API's headers tell."""

    rpm: int = 0
    itpm: int = 0
    otpm: int = 0


class FleetRateLimiter:
    """Token buckets per model, shared in Redis by every worker of the fleet."""

    def __init__(
        self,
        client: redis.Redis,
        limits: Mapping[str, RateLimit],
        *,
        default: RateLimit = RateLimit(),
        enabled: bool = True,
    ) -> None:
        self._redis = client
        self._limits = dict(limits)
        self._default = default
        self.enabled = enabled

    def _caps(self, model: str) -> dict[str, int]:
        limit = self._limits.get(model, self._default)
        return {"rpm": limit.rpm, "itpm": limit.itpm, "otpm": limit.otpm}

    def delay(self, model: str) -> float:
        """Seconds until one small request could start (0 when now): for deferring a task."""
        if not self.enabled:
            return 0.0
        paused = cast(bytes | None, self._redis.hget(keys.bucket(model), "paused_until"))
        return max(0.0, float(paused or 0) - time.time())

    def acquire(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Take one request and the tokens from the buckets, sleeping (never spinning) while
        they refill; returns the seconds waited."""
        if not self.enabled:
            return 0.0
        waited = 0.0
        while True:
            answer = _ACQUIRE(
                self._redis,
                keys={"bucket": keys.bucket(model)},
                args={
                    "requests": 1,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    **self._caps(model),
                },
            )
            wait = float(answer)
            if wait <= 0:
                return waited
            nap = min(wait, MAX_SLEEP)
            time.sleep(nap)
            waited += nap

    def refund(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Give back what the estimate took beyond the real usage (negative: take more)."""
        if self.enabled:
            _REFUND(
                self._redis,
                keys={"bucket": keys.bucket(model)},
                args={
                    "requests": 0,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    **self._caps(model),
                },
            )

    def pause(self, model: str, seconds: float) -> None:
        """A 429 said wait: every worker of the fleet waits for this model."""
        if self.enabled and seconds > 0:
            _PAUSE(self._redis, keys={"bucket": keys.bucket(model)}, args={"seconds": seconds})

    def observe(self, model: str, headers: Mapping[str, str]) -> None:
        """Resize the buckets to the limits the API announces and never trust more than it has
        left."""
        if not self.enabled:
            return
        announced: dict[str, str | int] = {}
        for name in HEADER_NAMES:
            field = name.replace("-", "_")
            for kind in ("limit", "remaining"):
                value = _int_header(headers, f"anthropic-ratelimit-{name}-{kind}")
                announced[f"{kind}_{field}"] = "" if value is None else value
        if any(value != "" for value in announced.values()):
            _OBSERVE(self._redis, keys={"bucket": keys.bucket(model)}, args=announced)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value else None
    except ValueError:
        return None
