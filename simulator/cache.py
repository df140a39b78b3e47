"""Prompt-cache emulation.

A prefix that ends at a `cache_control` breakpoint is billed as a cache write the first time and
as cache reads while it lives (5 minutes, or 1 hour with `ttl: "1h"`), per model. Prefixes below
the minimum cacheable length are never cached, as with the real API.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from simulator.tokens import segments, text_tokens

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


@dataclass(frozen=True)
class CacheUse:
    write_tokens: int = 0
    read_tokens: int = 0


class PromptCache:
    """Lives on the server's event loop thread; no locking needed."""

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self._expiry: dict[str, float] = {}

    def use(self, model: str, body: dict[str, Any], now: float | None = None) -> CacheUse:
        now = time.monotonic() if now is None else now
        digest = hashlib.sha256(model.encode())
        chars = 0
        breakpoints: list[tuple[str, int, float]] = []  # (key, tokens, ttl)
        for text, control in segments(body):
            digest.update(text.encode() + b"\x00")
            chars += len(text)
            if control is not None and text_tokens(chars) >= self.min_tokens:
                ttl = TTL_SECONDS.get(str(control.get("ttl", "5m")), TTL_SECONDS["5m"])
                breakpoints.append((digest.copy().hexdigest(), text_tokens(chars), ttl))
        if not breakpoints:
            return CacheUse()
        hit = next((tokens for key, tokens, _ in reversed(breakpoints) if self._live(key, now)), 0)
        for key, _tokens, ttl in breakpoints:
            self._expiry[key] = max(self._expiry.get(key, 0.0), now + ttl)
        return CacheUse(write_tokens=breakpoints[-1][1] - hit, read_tokens=hit)

    def _live(self, key: str, now: float) -> bool:
        return self._expiry.get(key, 0.0) > now
