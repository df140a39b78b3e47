"""The hooks one step hands to the Claude client: budget, rate limit and retry cap of its calls.

The Claude client calls them around every model call (workers/claude.py); what they do lives
in the budget (workers/budget.py) and the rate limiter (workers/ratelimit.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from workers.budget import (
    PROMPT_OVERHEAD,
    Hold,
    Reservation,
    Settlement,
    TaskBudget,
    worst_prompt_tokens,
)
from workers.models import Price, Usage
from workers.ratelimit import FleetRateLimiter

log = logging.getLogger("chorus.guards")

CHARS_PER_TOKEN = 3
"""Rate-limit estimate of prompt tokens before a call; settled with the real count after."""


def prompt_chars(system: str, blocks: list[str], schema_text: str) -> int:
    return len(system) + sum(len(b) for b in blocks) + len(schema_text)


class StepGuard:
    """Budget, rate limit and retry cap for the calls of one step (one input message).

    The first call's hold can be made ahead, in the step's begin (`hold`, then `opened`); a
    call's settlement waits for the next hold or for the step's record (`take_settlement`),
    which apply it in their own round trip.
    """

    def __init__(
        self,
        *,
        budget: TaskBudget,
        limiter: FleetRateLimiter,
        task_id: str,
        message_id: str,
        max_task_retries: int,
    ) -> None:
        self._budget = budget
        self._limiter = limiter
        self._task_id = task_id
        self._message_id = message_id
        self._max_retries = max_task_retries
        self._calls = 0
        self._opening: Hold | None = None
        self._pending: Settlement | None = None

    def hold(
        self, *, price: Price, system: str, blocks: list[str], schema: str, max_tokens: int
    ) -> Hold:
        """The worst case of the next call: the whole prompt written to the cache, plus
        max_tokens of output."""
        return self._budget.hold(
            self._task_id,
            f"{self._message_id}:{self._calls + 1}",
            prompt_tokens=worst_prompt_tokens(system, blocks, schema),
            max_tokens=max_tokens,
            price=price,
        )

    def opened(self, hold: Hold) -> None:
        """`hold` was made together with the step's begin; the first call uses it."""
        self._opening = hold

    def reserve(
        self,
        *,
        model: str,
        price: Price,
        system: str,
        blocks: list[str],
        schema: str,
        max_tokens: int,
    ) -> Reservation:
        hold = self.hold(
            price=price, system=system, blocks=blocks, schema=schema, max_tokens=max_tokens
        )
        self._calls += 1
        opening, self._opening = self._opening, None
        if opening == hold:
            return Reservation(hold.task_id, hold.field, hold.price)
        pending, self._pending = self._pending, None
        return self._budget.reserve(hold, settle_first=pending)

    def settle(self, reservation: Reservation, usage: Usage | None) -> None:
        """Note what the call cost; the next hold or the step's record applies it."""
        if self._pending is not None:  # two settlements without a hold between them
            self._budget.settle(self._pending)
        self._pending = self._budget.settlement(reservation, usage)

    def take_settlement(self) -> Settlement | None:
        """The settlement not yet applied, for the step's record to apply; None if none."""
        pending, self._pending = self._pending, None
        return pending

    def estimate(self, system: str, blocks: list[str], schema: str) -> int:
        """Prompt tokens the rate limiter takes before the call (given back after)."""
        return math.ceil(prompt_chars(system, blocks, schema) / CHARS_PER_TOKEN) + PROMPT_OVERHEAD

    def before_attempt(self, model: str, input_tokens: int, max_tokens: int) -> None:
        waited = self._limiter.acquire(model, input_tokens, max_tokens)
        if waited:
            log.info("waited %.2f s for the %s rate limit", waited, model)

    def after_attempt(
        self,
        model: str,
        *,
        estimate: int,
        max_tokens: int,
        usage: Usage | None,
        headers: Mapping[str, str],
        retry_after: float | None,
    ) -> None:
        if usage is not None:
            self._limiter.refund(
                model, estimate - usage.prompt_tokens, max_tokens - usage.output_tokens
            )
        else:
            self._limiter.refund(model, 0, max_tokens)  # a failed request produced no output
        if retry_after:
            self._limiter.pause(model, retry_after)
        self._limiter.observe(model, headers)

    def allow_retry(self) -> bool:
        """Take one retry from the task's cap (CHORUS_TASK_MAX_RETRIES); False once used up."""
        return self._budget.take_retry(self._task_id, self._max_retries)
