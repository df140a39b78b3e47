"""What the simulator billed: one entry per answered call, so tests can audit our accounting.

Batched calls are billed like any other and marked `batch: true` (with their batch id and
custom_id); the API prices them at half the normal rate, so the report also totals them apart
in `batch_totals` (a subset of `totals`, which counts every billed call).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

BATCH_PRICE_FACTOR = 0.5
"""Message Batches cost 50 % of the standard price, for every token kind."""


@dataclass(frozen=True)
class Charge:
    request_id: str
    model: str
    user_id: str | None
    """`metadata.user_id` of the request: lets a caller attribute calls to its own tasks."""
    usage: dict[str, int]
    """Exactly the four billed token counts (never other usage fields)."""
    batch: bool = False
    """Processed in a Message Batch: billed at BATCH_PRICE_FACTOR of the price."""
    batch_id: str | None = None
    custom_id: str | None = None


def billed_usage(usage: dict[str, Any]) -> dict[str, int]:
    return {name: int(usage.get(name) or 0) for name in USAGE_FIELDS}


class Ledger:
    def __init__(self) -> None:
        self._charges: list[Charge] = []

    def bill(self, charge: Charge) -> None:
        self._charges.append(charge)

    def clear(self) -> None:
        self._charges.clear()

    def report(self, user_id: str | None = None) -> dict[str, Any]:
        charges = [c for c in self._charges if user_id is None or c.user_id == user_id]
        return {
            "calls": [asdict(c) for c in charges],
            "totals": _totals(charges),
            "batch_totals": _totals([c for c in charges if c.batch]),
            "batch_price_factor": BATCH_PRICE_FACTOR,
        }


def _totals(charges: list[Charge]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for charge in charges:
        model = totals.setdefault(charge.model, {"calls": 0, **dict.fromkeys(USAGE_FIELDS, 0)})
        model["calls"] += 1
        for name in USAGE_FIELDS:
            model[name] += charge.usage.get(name, 0)
    return totals
