"""How batched requests end: scripted by custom_id or by a marker in the request's text, or
drawn at a rate, before any is answered; set at run time through `/_sim/batches`.

Scripted outcomes stay until replaced or reset (a custom_id is usually unique to one test); the
rates draw from a seeded generator, so a run repeats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulator.conversation import search_text

if TYPE_CHECKING:
    from simulator.batches import BatchRequest

SERVER_ERROR = "Internal server error (simulated)"


def errored(kind: str, message: str) -> dict[str, Any]:
    """An errored result: the error body /v1/messages would have answered with."""
    error = {"type": kind, "message": message}
    return {"type": "errored", "error": {"type": "error", "error": error}}


@dataclass(frozen=True)
class Outcome:
    """A scripted end for the requests whose custom_id equals, or whose text contains, match."""

    match: str
    result: str
    """Either "errored" or "expired"."""
    error_type: str = "api_error"
    message: str = SERVER_ERROR

    def applies(self, request: BatchRequest) -> bool:
        return self.match == request.custom_id or self.match in search_text(request.params)


class BatchPlan:
    """How batches behave: their delay, and which requests error or expire."""

    def __init__(
        self, delay: float = 1.0, error_rate: float = 0.0, expire_rate: float = 0.0, seed: int = 0
    ) -> None:
        self._defaults = (delay, error_rate, expire_rate, seed)
        self.reset()

    def reset(self) -> None:
        self.delay, self.error_rate, self.expire_rate, self.seed = self._defaults
        self.outcomes: list[Outcome] = []
        self._rng = random.Random(self.seed)

    def update(self, data: dict[str, Any]) -> None:
        """Change only the settings given; a list given replaces that list."""
        delay = float(data.get("delay", self.delay))
        error_rate = float(data.get("error_rate", self.error_rate))
        expire_rate = float(data.get("expire_rate", self.expire_rate))
        if delay < 0 or not (0 <= error_rate <= 1 and 0 <= expire_rate <= 1):
            raise ValueError("delay must be >= 0 and rates within 0..1")
        if error_rate + expire_rate > 1:
            raise ValueError("error_rate and expire_rate add up to at most 1")
        for name in ("errored", "expired"):
            if not isinstance(data.get(name, []), list):
                raise ValueError(f"{name}: a list of custom_ids or markers is required")
        outcomes = [o for o in self.outcomes if o.result == "errored" and "errored" not in data]
        outcomes += [o for o in self.outcomes if o.result == "expired" and "expired" not in data]
        for entry in data.get("errored") or []:
            entry = {"match": entry} if isinstance(entry, str) else dict(entry)
            outcomes.append(
                Outcome(
                    str(entry["match"]),
                    "errored",
                    str(entry.get("type", "api_error")),
                    str(entry.get("message", SERVER_ERROR)),
                )
            )
        outcomes += [Outcome(str(match), "expired") for match in data.get("expired") or []]
        self.delay, self.error_rate, self.expire_rate = delay, error_rate, expire_rate
        self.outcomes = outcomes
        if "seed" in data:
            self.seed = int(data["seed"])
            self._rng = random.Random(self.seed)

    def outcome(self, request: BatchRequest) -> dict[str, Any] | None:
        """A result decided before the request is answered, or None to answer it."""
        for scripted in self.outcomes:
            if scripted.applies(request):
                if scripted.result == "expired":
                    return {"type": "expired"}
                return errored(scripted.error_type, scripted.message)
        if self.error_rate or self.expire_rate:
            roll = self._rng.random()
            if roll < self.error_rate:
                return errored("api_error", SERVER_ERROR)
            if roll < self.error_rate + self.expire_rate:
                return {"type": "expired"}
        return None

    def report(self) -> dict[str, Any]:
        return {
            "delay": self.delay,
            "error_rate": self.error_rate,
            "expire_rate": self.expire_rate,
            "errored": [
                {"match": o.match, "type": o.error_type, "message": o.message}
                for o in self.outcomes
                if o.result == "errored"
            ],
            "expired": [o.match for o in self.outcomes if o.result == "expired"],
        }
