"""Model tiers and prices: configuration, never logic.

Prices are integer micro-dollars per million tokens, so costs add up exactly (no float drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Tier = Literal["fast", "strong"]

DEFAULT_TIERS: dict[Tier, str] = {
    "fast": "claude-haiku-4-5",
    "strong": "claude-sonnet-4-6",
}


@dataclass(frozen=True)
class Price:
    """Micro-dollars per million tokens of each kind."""

    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int

    @classmethod
    def from_dollars(cls, input_usd: float, output_usd: float) -> Price:
        """Standard cache multipliers: 5-minute write 1.25x, 1-hour write 2x, read 0.1x input."""
        micro = round(input_usd * 1_000_000)
        return cls(
            input=micro,
            output=round(output_usd * 1_000_000),
            cache_write_5m=micro * 125 // 100,
            cache_write_1h=micro * 2,
            cache_read=micro // 10,
        )


DEFAULT_PRICES: dict[str, Price] = {
    "claude-haiku-4-5": Price.from_dollars(1, 5),
    "claude-sonnet-4-6": Price.from_dollars(3, 15),
    "claude-opus-4-6": Price.from_dollars(5, 25),
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


def cost_micro_usd(usage: Usage, price: Price) -> int:
    """Cost of one call in micro-dollars, rounded half up once per call."""
    numerator = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * price.cache_write_5m
        + usage.cache_read_input_tokens * price.cache_read
    )
    return (numerator + 500_000) // 1_000_000


def price_for(model: str, prices: dict[str, Price] | None = None) -> Price:
    table = DEFAULT_PRICES if prices is None else prices
    try:
        return table[model]
    except KeyError:
        raise KeyError(f"no price configured for model {model!r}") from None
