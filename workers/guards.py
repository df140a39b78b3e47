"""Guards that hold across the whole fleet, by the names they had when they lived here.

They now live in modules of one job each: budgets in workers/budget.py, the rate limiter in
workers/ratelimit.py, a step's hooks for the Claude client in workers/stepguard.py. These
re-exports keep `from workers.guards import ...` working; new code imports from the modules.
"""

from __future__ import annotations

from workers.budget import (
    BUDGET_BYTES_PER_TOKEN,
    PROMPT_OVERHEAD,
    BudgetExceededError,
    Hold,
    HoldArgs,
    Reservation,
    Settlement,
    TaskBudget,
    prompt_bytes,
    refusal,
)
from workers.ratelimit import HEADER_NAMES, MAX_SLEEP, FleetRateLimiter, RateLimit
from workers.stepguard import CHARS_PER_TOKEN, StepGuard, prompt_chars

__all__ = [
    "BUDGET_BYTES_PER_TOKEN",
    "CHARS_PER_TOKEN",
    "HEADER_NAMES",
    "MAX_SLEEP",
    "PROMPT_OVERHEAD",
    "BudgetExceededError",
    "FleetRateLimiter",
    "Hold",
    "HoldArgs",
    "RateLimit",
    "Reservation",
    "Settlement",
    "StepGuard",
    "TaskBudget",
    "prompt_bytes",
    "prompt_chars",
    "refusal",
]
