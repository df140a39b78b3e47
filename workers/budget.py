"""Per-task budgets: hard limits in tokens and micro-dollars, held before each call, settled after.

This module and workers/lua/lib/budget.lua are the one place for budget logic. A call's worst
case (`worst_case`) is held before it is made; when it does not fit, the call is not made
(BudgetExceededError). After the call the hold is replaced by what it really cost. Holding and
settling ride along with other writes where they can: a step's first hold goes in its
begin_step call, its last settlement in its record_step call (`hold_args`, `settle_args`), so
budgets cost no round trip of their own on the hot path.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from messages.errors import ChorusError
from workers import keys, scripts
from workers.models import Price, Usage, cost_micro_usd

BUDGET_BYTES_PER_TOKEN = 2
"""Budget worst case: no tokenizer makes a token of less than two bytes of ordinary text often
enough to matter, and the output side is bounded exactly by max_tokens."""
PROMPT_OVERHEAD = 64
"""Tokens the API adds around a prompt (roles, the schema's framing)."""

_RESERVE = scripts.load("reserve")
_SETTLE = scripts.load("settle")


class BudgetExceededError(ChorusError):
    """The next call's worst case does not fit the task's budget; the call was not made."""

    def __init__(self, task_id: str, what: str, used: int, want: int, limit: int) -> None:
        super().__init__(
            f"task {task_id}: the next call's worst case ({want} {what}) does not fit the "
            f"budget ({used} of {limit} {what} used or reserved); the call was not made. "
            "Raise the budget at submit (budget_usd=, budget_tokens=) or CHORUS_TASK_BUDGET_*"
        )
        self.task_id = task_id
        self.what = what
        self.used, self.want, self.limit = used, want, limit
        self.replies: tuple[Any, ...] = ()
        """Replies of earlier calls in the same step, already paid for."""


def prompt_bytes(system: str, blocks: list[str], schema_text: str) -> int:
    return sum(len(part.encode()) for part in (system, *blocks, schema_text))


def worst_prompt_tokens(system: str, blocks: list[str], schema_text: str) -> int:
    """The most tokens a prompt can be billed as (see BUDGET_BYTES_PER_TOKEN)."""
    return math.ceil(prompt_bytes(system, blocks, schema_text) / BUDGET_BYTES_PER_TOKEN) + (
        PROMPT_OVERHEAD
    )


@dataclass(frozen=True)
class Hold:
    """A call's worst case, to be held against its task's budget before the call is made."""

    task_id: str
    field: str
    """Input message id and call number: a redelivery of the same call reuses it."""
    tokens: int
    micro_usd: int
    price: Price


@dataclass(frozen=True)
class Reservation:
    """A hold that was made; its call settles it."""

    task_id: str
    field: str
    price: Price


class SettleMode(StrEnum):
    SETTLE = "settle"
    """The call answered: what it cost replaces the hold."""
    RELEASE = "release"
    """The call failed: nothing was spent, the hold goes."""


@dataclass(frozen=True)
class Settlement:
    """What replaces a hold once its call is over: the real cost, or nothing (it failed)."""

    task_id: str
    field: str
    tokens: int
    micro_usd: int
    mode: str
    """`settle` or `release` (SettleMode)."""
    token: str = dataclass_field(default_factory=lambda: uuid.uuid4().hex)
    """This settlement's own name. It is applied once: a script sent again because a Redis
    restart lost its reply finds the token and settles nothing twice, while another
    delivery's settlement of the same call (its own token) still adds what it cost."""


def settle_args(settlement: Settlement | None) -> dict[str, str | int]:
    """The settle_* ARGV of reserve.lua and record_step.lua ('' field: nothing to settle)."""
    if settlement is None:
        return {
            "settle_field": "",
            "settle_tokens": 0,
            "settle_micro_usd": 0,
            "settle_mode": "",
            "settle_token": "",
        }
    return {
        "settle_field": settlement.field,
        "settle_tokens": settlement.tokens,
        "settle_micro_usd": settlement.micro_usd,
        "settle_mode": settlement.mode,
        "settle_token": settlement.token,
    }


class HoldArgs(NamedTuple):
    """A hold with the task's default limits, as begin_step takes it (`TaskBudget.reserve_args`)."""

    field: str
    tokens: int
    micro_usd: int
    default_tokens: int
    default_micro_usd: int
    ttl: int


def hold_args(hold: HoldArgs | tuple[Any, ...] | list[Any] | None) -> dict[str, str | int]:
    """The hold_* ARGV of begin_step.lua; nothing held for None or ()."""
    if not hold:
        return {
            "hold_field": "",
            "hold_tokens": 0,
            "hold_micro_usd": 0,
            "default_tokens": 0,
            "default_micro_usd": 0,
            "budget_ttl": 0,
        }
    given = hold if isinstance(hold, HoldArgs) else HoldArgs(*hold)
    return {
        "hold_field": given.field,
        "hold_tokens": given.tokens,
        "hold_micro_usd": given.micro_usd,
        "default_tokens": given.default_tokens,
        "default_micro_usd": given.default_micro_usd,
        "budget_ttl": given.ttl,
    }


class TaskBudget:
    """Hard per-task limits in tokens and micro-dollars: hold the worst case, then settle."""

    def __init__(
        self, client: redis.Redis, *, default_tokens: int, default_micro_usd: int, ttl: int
    ) -> None:
        self._redis = client
        self._defaults = (default_tokens, default_micro_usd)
        self._ttl = ttl

    def hold(
        self, task_id: str, field: str, *, prompt_tokens: int, max_tokens: int, price: Price
    ) -> Hold:
        """The worst case of a call: the prompt billed as a cache write or as plain input,
        whichever costs more, plus max_tokens of output."""
        worst = Usage(cache_creation_input_tokens=prompt_tokens, output_tokens=max_tokens)
        worst_usd = max(
            cost_micro_usd(worst, price),
            cost_micro_usd(Usage(input_tokens=prompt_tokens, output_tokens=max_tokens), price),
        )
        return Hold(task_id, field, prompt_tokens + max_tokens, worst_usd, price)

    def reserve_args(self, hold: Hold) -> HoldArgs:
        """The hold as begin_step takes it (`begin_step(..., hold=...)`)."""
        return HoldArgs(hold.field, hold.tokens, hold.micro_usd, *self._defaults, self._ttl)

    def reserve(self, hold: Hold, *, settle_first: Settlement | None = None) -> Reservation:
        """Hold the worst case (settling an earlier call first, same round trip); raises
        BudgetExceededError, and holds nothing, when it does not fit."""
        refused = _RESERVE(
            self._redis,
            keys={"task": keys.task(hold.task_id), "budget": keys.budget(hold.task_id)},
            args={
                "hold_field": hold.field,
                "hold_tokens": hold.tokens,
                "hold_micro_usd": hold.micro_usd,
                "default_tokens": self._defaults[0],
                "default_micro_usd": self._defaults[1],
                "ttl": self._ttl,
                **settle_args(settle_first),
            },
        )
        if refused:
            raise refusal(hold.task_id, refused)
        return Reservation(hold.task_id, hold.field, hold.price)

    def settlement(self, reservation: Reservation, usage: Usage | None) -> Settlement:
        """What settles the reservation (None: the call failed, nothing was spent)."""
        tokens = usage.prompt_tokens + usage.output_tokens if usage else 0
        usd = cost_micro_usd(usage, reservation.price) if usage else 0
        mode = SettleMode.SETTLE if usage else SettleMode.RELEASE
        return Settlement(reservation.task_id, reservation.field, tokens, usd, mode)

    def settle(self, settlement: Settlement) -> None:
        _SETTLE(
            self._redis,
            keys={"budget": keys.budget(settlement.task_id)},
            args={
                "field": settlement.field,
                "tokens": settlement.tokens,
                "micro_usd": settlement.micro_usd,
                "mode": settlement.mode,
                "ttl": self._ttl,
                "token": settlement.token,
            },
        )

    def take_retry(self, task_id: str, cap: int) -> bool:
        """Count one transport retry against the task's cap; False once the cap is used up."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.budget(task_id), "retries", 1)
            pipe.expire(keys.budget(task_id), self._ttl)
            taken, _ = pipe.execute()
        return int(taken) <= cap


def refusal(task_id: str, answer: Any) -> BudgetExceededError:
    """The error for a reserve refusal ({what, used, want, limit})."""
    what, used, want, limit = answer
    what = what.decode() if isinstance(what, bytes) else str(what)
    return BudgetExceededError(task_id, what, int(used), int(want), int(limit))
