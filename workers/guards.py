"""Guards that hold across the whole fleet: per-task budgets, per-model rate limits, a per-task
retry cap. Every counter lives in Redis and changes inside one Lua call, so a thousand worker
threads in twenty processes see one budget and one bucket.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from workers import keys
from workers.models import Price, Usage, cost_micro_usd

log = logging.getLogger("chorus.guards")

CHARS_PER_TOKEN = 3
"""Rate-limit estimate of prompt tokens before a call; settled with the real count after."""
BUDGET_BYTES_PER_TOKEN = 2
"""Budget worst case: no tokenizer makes a token of less than two bytes of ordinary text often
enough to matter, and the output side is bounded exactly by max_tokens."""
PROMPT_OVERHEAD = 64

MAX_SLEEP = 2.0
"""Longest single sleep while waiting for a bucket; the wait is re-checked after each."""


class BudgetExceededError(Exception):
    def __init__(self, task_id: str, what: str, used: int, want: int, limit: int) -> None:
        super().__init__(
            f"task {task_id}: the next call's worst case ({want} {what}) does not fit the "
            f"budget ({used} of {limit} {what} used or reserved); the call was not made. "
            "Raise the budget at submit (budget_usd=, budget_tokens=) or CHORUS_TASK_BUDGET_*"
        )
        self.used, self.want, self.limit = used, want, limit
        self.replies: tuple[Any, ...] = ()
        """Replies of earlier calls in the same step, already paid for."""


def prompt_chars(system: str, blocks: list[str], schema_text: str) -> int:
    return len(system) + sum(len(b) for b in blocks) + len(schema_text)


def prompt_bytes(system: str, blocks: list[str], schema_text: str) -> int:
    return sum(len(part.encode()) for part in (system, *blocks, schema_text))


# -- budgets ----------------------------------------------------------------------------------

BUDGET_LUA = """
local function parse_hold(v)
  if not v then return 0, 0 end
  local t, u = string.match(v, '(%d+):(%d+)')
  return tonumber(t), tonumber(u)
end

-- Replace the hold `field` by what the call cost (mode 'settle') or by nothing ('release').
local function settle_budget(budget, field, tokens, usd, mode, ttl)
  local rt, ru = parse_hold(redis.call('HGET', budget, 'r:' .. field))
  redis.call('HDEL', budget, 'r:' .. field)
  if mode == 'settle' then
    redis.call('HSET', budget, 's:' .. field, tokens .. ':' .. usd)
  else
    tokens, usd = 0, 0
  end
  redis.call('HINCRBY', budget, 'tokens', tokens - rt)
  redis.call('HINCRBY', budget, 'micro_usd', usd - ru)
  redis.call('EXPIRE', budget, ttl)
end

-- Hold a call's worst case, or return why it does not fit. A redelivered message re-running
-- the same call replaces what its earlier run held or spent under the same field.
local function reserve_budget(task, budget, field, tokens, usd, default_tokens, default_usd, ttl)
  local limit_tokens = tonumber(redis.call('HGET', task, 'budget_tokens') or default_tokens)
  local limit_usd = tonumber(redis.call('HGET', task, 'budget_micro_usd') or default_usd)
  local rt, ru = parse_hold(redis.call('HGET', budget, 'r:' .. field))
  local st, su = parse_hold(redis.call('HGET', budget, 's:' .. field))
  local used_tokens = tonumber(redis.call('HGET', budget, 'tokens') or '0') - rt - st
  local used_usd = tonumber(redis.call('HGET', budget, 'micro_usd') or '0') - ru - su
  if used_tokens + tokens > limit_tokens then
    return {'tokens', used_tokens, tokens, limit_tokens}
  end
  if used_usd + usd > limit_usd then
    return {'micro_usd', used_usd, usd, limit_usd}
  end
  redis.call('HDEL', budget, 's:' .. field)
  redis.call('HSET', budget, 'r:' .. field, tokens .. ':' .. usd,
             'tokens', used_tokens + tokens, 'micro_usd', used_usd + usd)
  redis.call('EXPIRE', budget, ttl)
  return nil
end
"""
"""Budget arithmetic as Lua functions, shared by the budget's own scripts and by the step's
begin/record scripts, which hold and settle in the same round trip as the step's state."""

_RESERVE = (
    BUDGET_LUA
    + """
if ARGV[7] ~= '' then
  settle_budget(KEYS[2], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], ARGV[6])
end
return reserve_budget(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
                      ARGV[4], ARGV[5], ARGV[6]) or false
"""
)

_SETTLE = (
    BUDGET_LUA
    + """
settle_budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5])
return 1
"""
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
    task_id: str
    field: str
    price: Price


@dataclass(frozen=True)
class Settlement:
    """What replaces a hold once its call is over: the real cost, or nothing (it failed)."""

    task_id: str
    field: str
    tokens: int
    micro_usd: int
    mode: str
    """`settle` or `release`."""

    def args(self) -> list[Any]:
        return [self.field, self.tokens, self.micro_usd, self.mode]


NO_SETTLEMENT = ["", 0, 0, ""]
"""Lua arguments for 'nothing to settle first'."""


class TaskBudget:
    """Hard per-task limits in tokens and micro-dollars: hold the worst case, then settle.

    Holding and settling ride along with other writes where they can (`reserve_args`,
    `Settlement.args`): a step's first hold goes with its begin, its last settlement with its
    record, so budgets cost no round trip of their own on the hot path.
    """

    def __init__(
        self, client: redis.Redis, *, default_tokens: int, default_micro_usd: int, ttl: int
    ) -> None:
        self._redis = client
        self._defaults = (default_tokens, default_micro_usd)
        self._ttl = ttl
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def hold(
        self, task_id: str, field: str, *, prompt_tokens: int, max_tokens: int, price: Price
    ) -> Hold:
        worst = Usage(cache_creation_input_tokens=prompt_tokens, output_tokens=max_tokens)
        worst_usd = max(
            cost_micro_usd(worst, price),
            cost_micro_usd(Usage(input_tokens=prompt_tokens, output_tokens=max_tokens), price),
        )
        return Hold(task_id, field, prompt_tokens + max_tokens, worst_usd, price)

    def reserve_args(self, hold: Hold) -> list[Any]:
        """Arguments of `reserve_budget` (BUDGET_LUA) after the two keys."""
        return [hold.field, hold.tokens, hold.micro_usd, *self._defaults, self._ttl]

    def reserve(self, hold: Hold, *, settle_first: Settlement | None = None) -> Reservation:
        """Hold the worst case (settling an earlier call first, same round trip); raises
        BudgetExceededError, and holds nothing, when it does not fit."""
        settle = settle_first.args() if settle_first is not None else NO_SETTLEMENT
        refused = self._reserve(
            keys=[keys.task(hold.task_id), keys.budget(hold.task_id)],
            args=[*self.reserve_args(hold), *settle],
        )
        if refused:
            raise refusal(hold.task_id, refused)
        return Reservation(hold.task_id, hold.field, hold.price)

    def settlement(self, reservation: Reservation, usage: Usage | None) -> Settlement:
        """What settles the reservation (None: the call failed, nothing was spent)."""
        tokens = usage.prompt_tokens + usage.output_tokens if usage else 0
        usd = cost_micro_usd(usage, reservation.price) if usage else 0
        mode = "settle" if usage else "release"
        return Settlement(reservation.task_id, reservation.field, tokens, usd, mode)

    def settle(self, settlement: Settlement) -> None:
        self._settle(keys=[keys.budget(settlement.task_id)], args=[*settlement.args(), self._ttl])

    def spent(self, task_id: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.budget(task_id))  # type: ignore[assignment]
        return {
            "tokens": int(raw.get(b"tokens", 0)),
            "micro_usd": int(raw.get(b"micro_usd", 0)),
            "retries": int(raw.get(b"retries", 0)),
        }

    def take_retry(self, task_id: str, cap: int) -> bool:
        """Count one transport retry against the task's cap; False once the cap is used up."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.budget(task_id), "retries", 1)
            pipe.expire(keys.budget(task_id), self._ttl)
            taken, _ = pipe.execute()
        return int(taken) <= cap


def refusal(task_id: str, answer: Any) -> BudgetExceededError:
    """The error for a `reserve_budget` refusal ({what, used, want, limit})."""
    what, used, want, limit = answer
    what = what.decode() if isinstance(what, bytes) else str(what)
    return BudgetExceededError(task_id, what, int(used), int(want), int(limit))


# -- rate limits ------------------------------------------------------------------------------

_ACQUIRE = """
local h = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = tonumber(redis.call('HGET', h, 'paused_until') or '0')
if paused > now then return tostring(paused - now) end
local last = tonumber(redis.call('HGET', h, 'ts') or tostring(now))
local elapsed = math.max(0, now - last)
local names = {'r', 'i', 'o'}
local levels, needs, caps = {}, {}, {}
local wait = 0
for k = 1, 3 do
  local cap = tonumber(redis.call('HGET', h, 'cap_' .. names[k]) or ARGV[3 + k])
  caps[k] = cap
  if cap > 0 then
    local level = tonumber(redis.call('HGET', h, 'lvl_' .. names[k]) or tostring(cap))
    level = math.min(cap, level + elapsed * cap / 60)
    levels[k] = level
    needs[k] = math.min(tonumber(ARGV[k]), cap)
    if level < needs[k] then wait = math.max(wait, (needs[k] - level) * 60 / cap) end
  end
end
for k = 1, 3 do
  if caps[k] > 0 then
    local level = levels[k]
    if wait == 0 then level = level - needs[k] end
    redis.call('HSET', h, 'lvl_' .. names[k], tostring(level))
  end
end
redis.call('HSET', h, 'ts', tostring(now))
redis.call('EXPIRE', h, 3600)
return tostring(wait)
"""

_ADJUST = """
local h = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] == 'pause' then
  local until_ = now + tonumber(ARGV[2])
  if until_ > tonumber(redis.call('HGET', h, 'paused_until') or '0') then
    redis.call('HSET', h, 'paused_until', tostring(until_))
  end
  return 1
end
local names = {'r', 'i', 'o'}
for k = 1, 3 do
  local lvl = 'lvl_' .. names[k]
  local level = redis.call('HGET', h, lvl)
  if ARGV[1] == 'refund' and level then
    local cap = tonumber(redis.call('HGET', h, 'cap_' .. names[k]) or ARGV[4 + k])
    redis.call('HSET', h, lvl, tostring(math.min(cap, tonumber(level) + tonumber(ARGV[1 + k]))))
  elseif ARGV[1] == 'observe' then
    local cap, remaining = tonumber(ARGV[1 + k]), tonumber(ARGV[4 + k])
    if cap and cap > 0 then redis.call('HSET', h, 'cap_' .. names[k], tostring(cap)) end
    if remaining and level and remaining < tonumber(level) then
      redis.call('HSET', h, lvl, tostring(remaining))
    end
  end
end
return 1
"""


@dataclass(frozen=True)
class RateLimit:
    """Per-minute limits of one model; 0 means unknown until the API's headers tell."""

    rpm: int = 0
    itpm: int = 0
    otpm: int = 0


HEADER_NAMES = ("requests", "input-tokens", "output-tokens")


class FleetRateLimiter:
    """Token buckets per model, refilled continuously like the API's own, shared in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        limits: Mapping[str, RateLimit],
        *,
        default: RateLimit = RateLimit(),
        enabled: bool = True,
    ) -> None:
        self._redis = client
        self._limits = dict(limits)
        self._default = default
        self.enabled = enabled
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)

    def _caps(self, model: str) -> list[int]:
        limit = self._limits.get(model, self._default)
        return [limit.rpm, limit.itpm, limit.otpm]

    def delay(self, model: str) -> float:
        """Seconds until one small request could start (0 when now): for deferring a task."""
        if not self.enabled:
            return 0.0
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.bucket(model))  # type: ignore[assignment]
        paused = float(raw.get(b"paused_until", 0)) - time.time()
        return max(0.0, paused)

    def acquire(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Take one request and the tokens from the buckets, sleeping (never spinning) while
        they refill; returns the seconds waited."""
        if not self.enabled:
            return 0.0
        waited = 0.0
        while True:
            answer = self._acquire(
                keys=[keys.bucket(model)],
                args=[1, input_tokens, output_tokens, *self._caps(model)],
            )
            wait = float(answer)
            if wait <= 0:
                return waited
            nap = min(wait, MAX_SLEEP)
            time.sleep(nap)
            waited += nap

    def refund(self, model: str, input_tokens: int, output_tokens: int) -> None:
        """Give back what the estimate took beyond the real usage (negative: take more)."""
        if self.enabled:
            self._adjust(
                keys=[keys.bucket(model)],
                args=["refund", 0, input_tokens, output_tokens, *self._caps(model)],
            )

    def pause(self, model: str, seconds: float) -> None:
        """A 429 said wait: every worker of the fleet waits for this model."""
        if self.enabled and seconds > 0:
            self._adjust(keys=[keys.bucket(model)], args=["pause", seconds])

    def observe(self, model: str, headers: Mapping[str, str]) -> None:
        """Resize the buckets to the limits the API announces and never trust more than it has
        left."""
        if not self.enabled:
            return
        caps, remaining = [], []
        for name in HEADER_NAMES:
            caps.append(_int_header(headers, f"anthropic-ratelimit-{name}-limit"))
            remaining.append(_int_header(headers, f"anthropic-ratelimit-{name}-remaining"))
        if any(v is not None for v in caps + remaining):
            self._adjust(
                keys=[keys.bucket(model)],
                args=["observe", *(v if v is not None else "" for v in caps + remaining)],
            )


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value else None
    except ValueError:
        return None


# -- the hooks one step hands to the Claude client -----------------------------------------------


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
        self.retry_cap_hit = False

    def hold(
        self, *, price: Price, system: str, blocks: list[str], schema: str, max_tokens: int
    ) -> Hold:
        """The worst case of the next call: the whole prompt written to the cache, plus
        max_tokens of output."""
        worst_prompt = math.ceil(prompt_bytes(system, blocks, schema) / BUDGET_BYTES_PER_TOKEN)
        return self._budget.hold(
            self._task_id,
            f"{self._message_id}:{self._calls + 1}",
            prompt_tokens=worst_prompt + PROMPT_OVERHEAD,
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
        allowed = self._budget.take_retry(self._task_id, self._max_retries)
        if not allowed:
            self.retry_cap_hit = True
        return allowed


def headers_of(obj: Any) -> Mapping[str, str]:
    headers = getattr(obj, "headers", None)
    return headers if headers is not None else {}
