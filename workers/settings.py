"""One settings object, read once from the environment (prefix CHORUS_) and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from workers.config import load_config
from workers.models import DEFAULT_PRICES, DEFAULT_TIERS, Price, Tier

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    """Broker, result backend and shared state (blackboard, trace, guards) all live here."""
    anthropic_base_url: str | None = None
    """None talks to the real API; the simulator's URL keeps everything offline."""
    anthropic_api_key: str | None = field(default=None, repr=False)
    """Never logged or printed: excluded from repr on purpose."""
    tiers: Mapping[Tier, str] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    """Model id per tier; agents name a tier, never a model."""
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    """Price per model id, in integer micro-dollars per million tokens."""
    max_depth: int = 5
    """Delegation hops allowed below a task's root message."""
    call_timeout: float = 60.0
    """Seconds for one model call; the threads pool has no task time limits, so this is the cap."""
    call_retries: int = 3
    """Retries per model call (429, 529, 5xx, timeouts); the SDK's own retries are off."""
    retry_base_delay: float = 0.5
    """First backoff in seconds for 529/5xx/timeouts; doubles per retry, with jitter."""
    state_ttl: int = 3600
    """Seconds task state (status, blackboard, trace, results) lives after its last write."""
    worker_concurrency: int = 64
    """Threads per worker process: model calls are I/O bound, so many fit in one process."""
    visibility_timeout: int = 600
    """Seconds before Redis redelivers an unacknowledged message; must exceed the longest call."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()
        tiers, prices = dict(base.tiers), dict(base.prices)
        if env.get("CHORUS_CONFIG"):
            file_tiers, file_prices = load_config(env["CHORUS_CONFIG"])
            tiers.update(file_tiers)
            prices.update(file_prices)
        for tier in tiers:
            tiers[tier] = env.get(f"CHORUS_MODEL_{tier.upper()}", tiers[tier])
        return replace(
            base,
            redis_url=env.get("CHORUS_REDIS_URL", base.redis_url),
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            tiers=tiers,
            prices=prices,
            max_depth=_int(env, "CHORUS_MAX_DEPTH", base.max_depth),
            call_timeout=_float(env, "CHORUS_CALL_TIMEOUT", base.call_timeout),
            call_retries=_int(env, "CHORUS_CALL_RETRIES", base.call_retries),
            retry_base_delay=_float(env, "CHORUS_RETRY_BASE_DELAY", base.retry_base_delay),
            state_ttl=_int(env, "CHORUS_STATE_TTL", base.state_ttl),
            worker_concurrency=_int(env, "CHORUS_WORKER_CONCURRENCY", base.worker_concurrency),
            visibility_timeout=_int(env, "CHORUS_VISIBILITY_TIMEOUT", base.visibility_timeout),
        )

    def model_for(self, tier: Tier) -> str:
        return self.tiers[tier]


class SettingsError(ValueError):
    """A CHORUS_ variable has a value that cannot be used; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
