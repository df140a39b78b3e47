"""The simulator's own rate limits: requests, input tokens and output tokens per minute, per
model, as token buckets (the algorithm Anthropic documents), announced in `anthropic-ratelimit-*`
headers."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WINDOW = 60.0
"""Limits are per minute; each bucket refills continuously at limit/60 per second."""
UNLIMITED = 10**9


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None


@dataclass
class _Buckets:
    """Requests, input tokens, output tokens: levels that refill toward their capacity."""

    levels: list[float]
    stamp: float

    def refill(self, caps: tuple[int | None, ...], now: float) -> None:
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        for k, cap in enumerate(caps):
            if cap is not None:
                self.levels[k] = min(cap, self.levels[k] + elapsed * cap / WINDOW)


class RateLimiter:
    """Anthropic's documented algorithm: a token bucket per limit, continuously replenished up
    to the per-minute maximum, so there is no fixed window to wait out."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buckets: dict[str, _Buckets] = {}
        self.rejected = 0

    @property
    def _caps(self) -> tuple[int | None, ...]:
        return (self.limits.rpm, self.limits.itpm, self.limits.otpm)

    def _bucket(self, model: str, now: float) -> _Buckets:
        bucket = self._buckets.get(model)
        if bucket is None:
            levels = [float(cap) if cap is not None else 0.0 for cap in self._caps]
            bucket = self._buckets[model] = _Buckets(levels, now)
        bucket.refill(self._caps, now)
        return bucket

    def admit(self, model: str, input_tokens: int, now: float | None = None) -> float | None:
        """Count the request, or return the seconds to wait when a limit would be crossed."""
        now = time.monotonic() if now is None else now
        bucket = self._bucket(model, now)
        rpm, itpm, otpm = self._caps
        waits = []
        if rpm is not None and bucket.levels[0] < 1:
            waits.append((1 - bucket.levels[0]) * WINDOW / rpm)
        if itpm is not None and bucket.levels[1] < min(input_tokens, itpm):
            waits.append((min(input_tokens, itpm) - bucket.levels[1]) * WINDOW / itpm)
        if otpm is not None and bucket.levels[2] <= 0:
            waits.append((1 - bucket.levels[2]) * WINDOW / otpm)
        if waits:
            self.rejected += 1
            return max(0.001, max(waits))
        bucket.levels[0] -= 1
        bucket.levels[1] -= input_tokens
        return None

    def settle(self, model: str, output_tokens: int, now: float | None = None) -> None:
        """Take the output tokens of an answered request from its bucket."""
        now = time.monotonic() if now is None else now
        self._bucket(model, now).levels[2] -= output_tokens

    def headers(self, model: str, now: float | None = None) -> dict[str, str]:
        now = time.monotonic() if now is None else now
        bucket = self._bucket(model, now)
        out: dict[str, str] = {}
        fills = []
        for k, (name, limit) in enumerate(
            zip(("requests", "input-tokens", "output-tokens"), self._caps, strict=True)
        ):
            cap = UNLIMITED if limit is None else limit
            level = cap if limit is None else bucket.levels[k]
            full_in = 0.0 if limit is None else max(0.0, (cap - level) * WINDOW / cap)
            fills.append(full_in)
            prefix = f"anthropic-ratelimit-{name}"
            out[f"{prefix}-limit"] = str(cap)
            out[f"{prefix}-remaining"] = str(max(0, math.floor(level)))
            out[f"{prefix}-reset"] = _at(now, full_in)
        itpm, otpm = self.limits.itpm, self.limits.otpm
        if itpm is None or otpm is None:
            total_cap, total_left = UNLIMITED, UNLIMITED
        else:
            total_cap = itpm + otpm
            total_left = max(0, math.floor(bucket.levels[1]) + math.floor(bucket.levels[2]))
        out["anthropic-ratelimit-tokens-limit"] = str(total_cap)
        out["anthropic-ratelimit-tokens-remaining"] = str(total_left)
        out["anthropic-ratelimit-tokens-reset"] = _at(now, max(fills[1:]))
        return out


def _at(now: float, seconds: float) -> str:
    """RFC 3339 time when a bucket is full again."""
    del now
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def retry_after_headers(seconds: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(int(seconds * 1000)),
    }
