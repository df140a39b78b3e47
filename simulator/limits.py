"""The simulator's own rate limits: requests, input tokens and output tokens per minute, per
model, over a sliding 60-second window, announced in `anthropic-ratelimit-*` headers."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

WINDOW = 60.0
UNLIMITED = 10**9


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None


@dataclass
class _Window:
    events: deque[tuple[float, int, int, int]] = field(default_factory=deque)
    """(time, requests, input tokens, output tokens)"""

    def trim(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - WINDOW:
            self.events.popleft()

    def totals(self) -> tuple[int, int, int]:
        return (
            sum(e[1] for e in self.events),
            sum(e[2] for e in self.events),
            sum(e[3] for e in self.events),
        )


class RateLimiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._windows: dict[str, _Window] = {}
        self.rejected = 0

    def admit(self, model: str, input_tokens: int, now: float | None = None) -> float | None:
        """Count the request, or return the seconds to wait when a limit would be crossed."""
        now = time.monotonic() if now is None else now
        window = self._windows.setdefault(model, _Window())
        window.trim(now)
        requests, inputs, outputs = window.totals()
        limits = self.limits
        over = (
            (limits.rpm is not None and requests + 1 > limits.rpm)
            or (limits.itpm is not None and inputs + input_tokens > limits.itpm)
            or (limits.otpm is not None and outputs >= limits.otpm)
        )
        if over:
            self.rejected += 1
            oldest = window.events[0][0] if window.events else now
            return max(0.001, oldest + WINDOW - now)
        window.events.append((now, 1, input_tokens, 0))
        return None

    def settle(self, model: str, output_tokens: int, now: float | None = None) -> None:
        """Add the output tokens of an answered request to the window."""
        now = time.monotonic() if now is None else now
        window = self._windows.setdefault(model, _Window())
        window.events.append((now, 0, 0, output_tokens))

    def headers(self, model: str, now: float | None = None) -> dict[str, str]:
        now = time.monotonic() if now is None else now
        window = self._windows.setdefault(model, _Window())
        window.trim(now)
        requests, inputs, outputs = window.totals()
        reset = window.events[0][0] + WINDOW - now if window.events else 0.0
        reset_at = (datetime.now(UTC) + timedelta(seconds=reset)).isoformat(timespec="seconds")
        out: dict[str, str] = {}
        for name, limit, used in (
            ("requests", self.limits.rpm, requests),
            ("input-tokens", self.limits.itpm, inputs),
            ("output-tokens", self.limits.otpm, outputs),
        ):
            cap = UNLIMITED if limit is None else limit
            prefix = f"anthropic-ratelimit-{name}"
            out[f"{prefix}-limit"] = str(cap)
            out[f"{prefix}-remaining"] = str(max(0, cap - used))
            out[f"{prefix}-reset"] = reset_at
        total_cap = (
            UNLIMITED
            if None in (self.limits.itpm, self.limits.otpm)
            else ((self.limits.itpm or 0) + (self.limits.otpm or 0))
        )
        out["anthropic-ratelimit-tokens-limit"] = str(total_cap)
        out["anthropic-ratelimit-tokens-remaining"] = str(max(0, total_cap - inputs - outputs))
        out["anthropic-ratelimit-tokens-reset"] = reset_at
        return out


def retry_after_headers(seconds: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(int(seconds * 1000)),
    }
