"""What the simulator billed: one entry per answered call, so tests can audit our accounting."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@dataclass(frozen=True)
class Charge:
    request_id: str
    model: str
    user_id: str | None
    """`metadata.user_id` of the request: lets a caller attribute calls to its own tasks."""
    usage: dict[str, int]


class Ledger:
    def __init__(self) -> None:
        self._charges: list[Charge] = []

    def bill(self, charge: Charge) -> None:
        self._charges.append(charge)

    def clear(self) -> None:
        self._charges.clear()

    def report(self, user_id: str | None = None) -> dict[str, Any]:
        charges = [c for c in self._charges if user_id is None or c.user_id == user_id]
        totals: dict[str, dict[str, int]] = {}
        for charge in charges:
            model = totals.setdefault(charge.model, {"calls": 0, **dict.fromkeys(USAGE_FIELDS, 0)})
            model["calls"] += 1
            for name in USAGE_FIELDS:
                model[name] += charge.usage.get(name, 0)
        return {"calls": [asdict(c) for c in charges], "totals": totals}
