"""Model tiers and prices: configuration, never logic.

Prices are integer micro-dollars per million tokens, so costs add up exactly (no float drift).
Defaults checked against Anthropic's model pages in November 2026: Claude Haiku 5.5 (fast tier:
routing, critique) and Claude Sonnet 5.5 (strong tier). Override them with CHORUS_MODEL_FAST /
CHORUS_MODEL_STRONG and a CHORUS_CONFIG file (see workers.config).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Tier = Literal["fast", "strong"]

DEFAULT_TIERS: dict[Tier, str] = {
    "fast": "claude-haiku-5-5",
    "strong": "claude-sonnet-5-5",
}

MICRO = 1_000_000

BATCH_DIVISOR = 2
"""Message Batches bill every token kind at 50 % of the standard rate (`Price.batch`); the
default rates are even numbers of micro-dollars, so halving them is exact."""


@dataclass(frozen=True)
class Price:
    """Micro-dollars per million tokens of each kind."""

    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    long_context: Price | None = None
    """Prices for prompts above `long_context_threshold` tokens, where a model has them."""
    long_context_threshold: int = 0

    @classmethod
    def standard(cls, input_usd: float, output_usd: float, read_usd: float | None = None) -> Price:
        """Standard cache multipliers: 5-minute write 1.25x, 1-hour write 2x, read 0.1x input."""
        micro = round(input_usd * MICRO)
        return cls(
            input=micro,
            output=round(output_usd * MICRO),
            cache_write_5m=micro * 125 // 100,
            cache_write_1h=micro * 2,
            cache_read=micro // 10 if read_usd is None else round(read_usd * MICRO),
        )

    def batch(self) -> Price:
        """The Message Batches price: half of every rate (BATCH_PRICE_FACTOR), long context too."""
        return replace(
            self,
            input=self.input // BATCH_DIVISOR,
            output=self.output // BATCH_DIVISOR,
            cache_write_5m=self.cache_write_5m // BATCH_DIVISOR,
            cache_write_1h=self.cache_write_1h // BATCH_DIVISOR,
            cache_read=self.cache_read // BATCH_DIVISOR,
            long_context=self.long_context.batch() if self.long_context else None,
        )

    def for_prompt(self, prompt_tokens: int) -> Price:
        if self.long_context is not None and prompt_tokens > self.long_context_threshold:
            return self.long_context
        return self


DEFAULT_PRICES: dict[str, Price] = {
    # Haiku 5.5 bills prompts over 100k tokens at the higher rates.
    "claude-haiku-5-5": replace(
        Price.standard(0.10, 0.50),
        long_context=Price.standard(0.50, 2.50),
        long_context_threshold=100_000,
    ),
    "claude-sonnet-5-5": Price.standard(2, 10, read_usd=0.10),
    "claude-opus-5-5": Price.standard(4, 20),
    "claude-sonnet-5": Price.standard(2, 10),
    "claude-haiku-4-5": Price.standard(1, 5),
    "claude-sonnet-4-6": Price.standard(3, 15),
    "claude-opus-4-6": Price.standard(5, 25),
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def cost_micro_usd(usage: Usage, price: Price) -> int:
    """Cost of one call in micro-dollars, rounded half up once per call.

    Cache writes are priced at the 5-minute rate: that is the TTL Chorus asks for.
    """
    rate = price.for_prompt(usage.prompt_tokens)
    numerator = (
        usage.input_tokens * rate.input
        + usage.output_tokens * rate.output
        + usage.cache_creation_input_tokens * rate.cache_write_5m
        + usage.cache_read_input_tokens * rate.cache_read
    )
    return (numerator + MICRO // 2) // MICRO
