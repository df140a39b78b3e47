"""The one retry layer for model calls (the SDK's own retries are off, so nothing stacks).

429 waits as long as the API asks (`retry-after-ms`, then `retry-after`); 529 and 5xx back off
exponentially with jitter; connection errors and timeouts are retried; a 429 caused by a spend
limit, and every other 4xx, is not. Each retry is recorded so the trace can show it.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from messages.errors import ChorusError

T = TypeVar("T")

SPEND_LIMIT_HINTS = ("usage limit", "spend limit", "credit", "billing", "extra usage")
"""Words in a 429's message that mean money, not pace: waiting will not help."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    """Retries per model call after the first attempt."""
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    """A server asking for a longer pause than this is not waited for in a worker slot."""


@dataclass(frozen=True)
class RetryEvent:
    attempt: int
    error: str
    status: int | None
    wait_seconds: float


class ModelCallError(ChorusError):
    """The call failed for good: not retryable, or out of retries."""

    def __init__(self, message: str, *, status: int | None, retries: tuple[RetryEvent, ...]):
        super().__init__(message)
        self.status = status
        self.retries = retries
        self.replies: tuple[Any, ...] = ()
        """Replies of earlier attempts in the same step, already billed."""
        self.capped = False
        """True when the task's retry cap, not this call's own limit, stopped the retries."""


def describe(exc: BaseException) -> tuple[str, int | None]:
    if isinstance(exc, anthropic.APIStatusError):
        return f"{type(exc).__name__} (HTTP {exc.status_code}): {error_text(exc)}", exc.status_code
    return f"{type(exc).__name__}: {exc}", None


def error_text(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error")
        text = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(text, str):
            return text
    return str(exc.message)


def is_spend_limit(exc: BaseException) -> bool:
    if not isinstance(exc, anthropic.RateLimitError):
        return False
    message = error_text(exc).lower()
    return any(hint in message for hint in SPEND_LIMIT_HINTS)


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status == 429:
            return not is_spend_limit(exc)
        return status in (408, 409) or status >= 500
    return False


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `retry-after`."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())


def call_with_retries(
    policy: RetryPolicy,
    call: Callable[[], T],
    *,
    allow_retry: Callable[[], bool] | None = None,
) -> tuple[T, tuple[RetryEvent, ...]]:
    """Run `call` under the policy; returns its result and the retries it took.

    `allow_retry` is asked before each retry (the task-wide retry cap); False ends the call.
    """
    events: list[RetryEvent] = []
    capped = False

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after(exc) if exc is not None else None
        if asked is not None:
            return asked
        backoff = min(policy.max_delay, policy.base_delay * 2 ** (state.attempt_number - 1))
        return random.uniform(backoff / 2, backoff)  # jitter keeps a fleet from retrying in step

    def should_retry(exc: BaseException) -> bool:
        nonlocal capped
        asked = retry_after(exc)
        if not retryable(exc) or (asked is not None and asked > policy.max_retry_after):
            return False
        if len(events) >= policy.max_retries:
            return False  # tenacity stops here anyway; do not spend the task's cap on it
        if allow_retry is not None and not allow_retry():
            capped = True
            return False
        return True

    def record(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        text, status = describe(exc) if exc is not None else ("", None)
        seconds = state.next_action.sleep if state.next_action else 0.0
        events.append(RetryEvent(state.attempt_number, text, status, round(seconds, 3)))

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=wait,
        retry=retry_if_exception(should_retry),
        before_sleep=record,
        reraise=True,
    )
    try:
        result = retrying(call)
    except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
        text, status = describe(exc)
        if capped:
            text = f"{text} (the task's retry cap is used up; no more retries for this task)"
        elif retryable(exc) and len(events) >= policy.max_retries:
            text = f"{text} (gave up after {len(events)} retries)"
        error = ModelCallError(text, status=status, retries=tuple(events))
        error.capped = capped
        raise error from None
    return result, tuple(events)
