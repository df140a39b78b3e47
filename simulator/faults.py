"""Injected faults: the failure modes of the real API, at a rate or on a schedule.

One global plan applies to every request, as before. Scoped plans apply only to requests
whose text (system prompt or messages, see `conversation.search_text`) contains their
`match`, so tests sharing one simulator cannot consume each other's faults: a matching
request draws from the first matching scoped plan that still has something to inject (a
schedule entry or a rate), and then not from the global plan.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("rate_limit", "overloaded", "server_error", "hang", "prose", "truncate", "spend_limit")
"""rate_limit: 429 with retry-after; overloaded: 529; server_error: 500; hang: no answer before
the client gives up; prose: text instead of the forced tool; truncate: JSON cut at max_tokens;
spend_limit: 429 that no retry can fix."""

NO_FAULT = "ok"


class FaultConfigError(ValueError):
    pass


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)
    schedule: list[str] = field(default_factory=list)
    """Consumed first, one entry per request ("ok" for a normal answer); then the rates apply."""
    seed: int = 0
    retry_after: float = 0.2
    """Seconds a rate_limit fault asks the client to wait (sent as retry-after-ms too)."""
    hang_seconds: float = 3600.0
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._check()

    def _check(self) -> None:
        unknown = (set(self.rates) | set(self.schedule)) - {*FAULTS, NO_FAULT}
        if unknown:
            raise FaultConfigError(f"unknown fault(s) {sorted(unknown)}; known: {FAULTS}")
        if any(not 0 <= r <= 1 for r in self.rates.values()) or sum(self.rates.values()) > 1:
            raise FaultConfigError("fault rates must be within 0..1 and add up to at most 1")

    def active(self) -> bool:
        """Whether this plan still decides requests (a scoped plan with nothing left does not)."""
        return bool(self.schedule) or any(rate > 0 for rate in self.rates.values())

    def draw(self) -> str | None:
        """The fault for the next request, or None."""
        if self.schedule:
            kind = self.schedule.pop(0)
        else:
            kind, roll = NO_FAULT, self._rng.random()
            for name in FAULTS:
                roll -= self.rates.get(name, 0.0)
                if roll < 0:
                    kind = name
                    break
        if kind == NO_FAULT:
            return None
        self.injected[kind] += 1
        return kind

    def update(self, data: dict[str, Any]) -> None:
        """Replace rates/schedule (and optionally retry_after, hang_seconds, seed) at run time."""
        old = (dict(self.rates), list(self.schedule))
        self.rates = {str(k): float(v) for k, v in (data.get("rates") or {}).items()}
        self.schedule = [str(s) for s in data.get("schedule") or []]
        try:
            self._check()
        except FaultConfigError:
            self.rates, self.schedule = old
            raise
        self.retry_after = float(data.get("retry_after", self.retry_after))
        self.hang_seconds = float(data.get("hang_seconds", self.hang_seconds))
        if "seed" in data:
            self._rng = random.Random(int(data["seed"]))

    def report(self) -> dict[str, Any]:
        return {
            "rates": self.rates,
            "schedule": self.schedule,
            "retry_after": self.retry_after,
            "hang_seconds": self.hang_seconds,
            "injected": dict(self.injected),
        }


class FaultBook:
    """The global plan and the scoped ones, keyed by their match string."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.scoped: dict[str, FaultPlan] = {}

    def draw(self, text: str) -> tuple[str | None, FaultPlan]:
        """The fault for a request with this text, and the plan it came from."""
        for match, plan in self.scoped.items():
            if match in text and plan.active():
                return plan.draw(), plan
        return self.plan.draw(), self.plan

    def update(self, data: dict[str, Any]) -> None:
        """`match` set: replace that scoped plan; otherwise update the global plan."""
        match = data.get("match")
        if match is None:
            self.plan.update(data)
            return
        if not isinstance(match, str) or not match:
            raise FaultConfigError("match: a non-empty string is required")
        plan = FaultPlan(
            seed=int(data.get("seed", self.plan.seed)),
            retry_after=self.plan.retry_after,
            hang_seconds=self.plan.hang_seconds,
        )
        plan.update(data)
        self.scoped[match] = plan

    def clear(self, match: str | None = None) -> None:
        """Drop one scoped plan, or all of them; the global plan stays."""
        if match is None:
            self.scoped.clear()
        else:
            self.scoped.pop(match, None)

    def report(self) -> dict[str, Any]:
        scoped = [{"match": match, **plan.report()} for match, plan in self.scoped.items()]
        return {**self.plan.report(), "scoped": scoped}
