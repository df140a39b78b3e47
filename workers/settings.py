"""One settings object, read once from the environment (prefix CHORUS_) and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from messages.errors import ChorusError
from workers.config import load_config, load_rate_limits
from workers.guards import RateLimit
from workers.models import DEFAULT_PRICES, DEFAULT_TIERS, Price, Tier

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    """Broker, result backend and shared state (blackboard, trace, guards) all live here; a
    `sentinel://h1:26379;sentinel://h2:26379` list names Redis Sentinels instead of a server."""
    sentinel_master: str = "mymaster"
    """The Sentinel master name (`sentinel monitor NAME ...`) of a sentinel:// URL."""
    sentinel_password: str | None = field(default=None, repr=False)
    """Password of the Sentinels themselves (their `requirepass`); the data server's password
    goes in the URL, as for redis://."""
    redis_wait_replicas: int = 0
    """After every state script and every agent message published, WAIT until this many
    replicas have the write, so a failover does not lose it; 0 (no WAIT) by default."""
    redis_wait_timeout_ms: int = 100
    """The WAIT's bound in milliseconds; past it the write is on the primary only (a warning)."""
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
    redis_outage_seconds: float = 30.0
    """How long a worker rides out a Redis restart (state writes, publishes, results) before a
    step fails; its message is then redelivered after the visibility timeout."""
    transit_check_seconds: float = 15.0
    """A message published this long ago and found in no queue and no worker's hands (lost in
    kombu's BRPOP window by a killed worker or a Redis restart) is put back; 0 switches off."""
    task_events: bool = False
    """Workers always send task events. Off by default: Flower switches them on (Celery's
    `enable_events`, every 5 s) while it runs, so nobody pays for events nobody watches."""
    prompt_cache: bool = True
    """Mark the system prompt and the request cacheable (writes 1.25x, reads 0.1x the input
    price); off only to measure what caching saves, or for a proxy that rejects cache_control."""
    database_url: str = ""
    """SQLAlchemy URL of the audit trail; empty means a SQLite file under the user's data dir."""
    audit: bool = True
    """Write every message and transition to the audit stream (drained into SQL by the auditor)."""
    audit_maxlen: int = 100_000
    """Audit events Redis holds while no auditor drains them; older ones are trimmed past this."""
    audit_max_age: float = 86_400.0
    """Seconds an audit event waits in Redis for an auditor before it is trimmed; 0: any age."""
    audit_warn_seconds: float = 300.0
    """Workers warn (once per this many seconds) while the oldest audit event waiting is older
    than this: nothing drains the stream. 0 switches the warning off."""
    task_budget_tokens: int = 1_000_000
    """Default hard limit of tokens (prompt + output) per task; Dispatcher.submit can override."""
    task_budget_usd: float = 1.0
    """Default hard limit of spend per task in USD; Dispatcher.submit can override."""
    task_max_retries: int = 20
    """Transport retries a whole task may take, across all its agents: no retry storms."""
    rate_limiter: bool = True
    """Share per-model token buckets through Redis; off only to measure what it saves."""
    batch_low_priority: bool = False
    """Steps submitted with priority `low` go through the Message Batches API (half price)."""
    batch_max_requests: int = 1000
    """A model's pending batched requests are sent as one batch once this many wait ..."""
    batch_max_age_seconds: float = 60.0
    """... or once the oldest has waited this long."""
    batch_poll_seconds: float = 30.0
    """How often the batcher looks at its batches (and gathers requests); tests use less."""
    batch_fallback: str = "error"
    """What an errored, expired or canceled batched call becomes: `error` (an error result
    and a dead letter) or `sync` (the call is made again through the Messages API)."""
    batcher: bool = True
    """Every worker offers to lead the fleet's batcher (one leads at a time, by a lock)."""
    batch_lock_seconds: float = 15.0
    """The batcher's leadership lock lives this long unless renewed: a dead leader is
    replaced after at most this many seconds."""
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    """Per-model requests/input/output tokens per minute (CHORUS_CONFIG [rate_limits.<model>])."""
    default_rate_limit: RateLimit = field(default_factory=RateLimit)
    """Limits for models without their own entry (CHORUS_RATE_LIMIT_RPM/ITPM/OTPM); 0 means
    unknown: the buckets learn the real limits from the API's anthropic-ratelimit-* headers."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()
        tiers, prices = dict(base.tiers), dict(base.prices)
        rate_limits: dict[str, RateLimit] = {}
        if env.get("CHORUS_CONFIG"):
            file_tiers, file_prices = load_config(env["CHORUS_CONFIG"])
            tiers.update(file_tiers)
            prices.update(file_prices)
            rate_limits = load_rate_limits(env["CHORUS_CONFIG"])
        for tier in tiers:
            tiers[tier] = env.get(f"CHORUS_MODEL_{tier.upper()}", tiers[tier])
        return replace(
            base,
            redis_url=env.get("CHORUS_REDIS_URL", base.redis_url),
            sentinel_master=env.get("CHORUS_SENTINEL_MASTER") or base.sentinel_master,
            sentinel_password=env.get("CHORUS_SENTINEL_PASSWORD") or None,
            redis_wait_replicas=_int(env, "CHORUS_REDIS_WAIT_REPLICAS", base.redis_wait_replicas),
            redis_wait_timeout_ms=_int(
                env, "CHORUS_REDIS_WAIT_TIMEOUT_MS", base.redis_wait_timeout_ms
            ),
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
            redis_outage_seconds=_float(
                env, "CHORUS_REDIS_OUTAGE_SECONDS", base.redis_outage_seconds
            ),
            transit_check_seconds=_float(
                env, "CHORUS_TRANSIT_CHECK_SECONDS", base.transit_check_seconds
            ),
            task_events=_bool(env, "CHORUS_TASK_EVENTS", base.task_events),
            prompt_cache=_bool(env, "CHORUS_PROMPT_CACHE", base.prompt_cache),
            database_url=env.get("CHORUS_DATABASE_URL") or default_database_url(env),
            audit=_bool(env, "CHORUS_AUDIT", base.audit),
            audit_maxlen=_int(env, "CHORUS_AUDIT_MAXLEN", base.audit_maxlen),
            audit_max_age=_float(env, "CHORUS_AUDIT_MAX_AGE", base.audit_max_age),
            audit_warn_seconds=_float(env, "CHORUS_AUDIT_WARN_SECONDS", base.audit_warn_seconds),
            task_budget_tokens=_int(env, "CHORUS_TASK_BUDGET_TOKENS", base.task_budget_tokens),
            task_budget_usd=_float(env, "CHORUS_TASK_BUDGET_USD", base.task_budget_usd),
            task_max_retries=_int(env, "CHORUS_TASK_MAX_RETRIES", base.task_max_retries),
            rate_limiter=_bool(env, "CHORUS_RATE_LIMITER", base.rate_limiter),
            batch_low_priority=_bool(env, "CHORUS_BATCH_LOW_PRIORITY", base.batch_low_priority),
            batch_max_requests=_int(env, "CHORUS_BATCH_MAX_REQUESTS", base.batch_max_requests),
            batch_max_age_seconds=_float(
                env, "CHORUS_BATCH_MAX_AGE_SECONDS", base.batch_max_age_seconds
            ),
            batch_poll_seconds=_float(env, "CHORUS_BATCH_POLL_SECONDS", base.batch_poll_seconds),
            batch_fallback=_choice(
                env, "CHORUS_BATCH_FALLBACK", base.batch_fallback, ("error", "sync")
            ),
            batcher=_bool(env, "CHORUS_BATCHER", base.batcher),
            batch_lock_seconds=_float(env, "CHORUS_BATCH_LOCK_SECONDS", base.batch_lock_seconds),
            rate_limits=rate_limits,
            default_rate_limit=RateLimit(
                rpm=_int(env, "CHORUS_RATE_LIMIT_RPM", 0),
                itpm=_int(env, "CHORUS_RATE_LIMIT_ITPM", 0),
                otpm=_int(env, "CHORUS_RATE_LIMIT_OTPM", 0),
            ),
        )

    def model_for(self, tier: Tier) -> str:
        return self.tiers[tier]

    @property
    def task_budget_micro_usd(self) -> int:
        return round(self.task_budget_usd * 1_000_000)


def default_database_url(env: Mapping[str, str]) -> str:
    """A SQLite file every local process agrees on, whatever its working directory."""
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(data_home) / 'chorus' / 'audit.sqlite3'}"


class SettingsError(ChorusError, ValueError):
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


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false (1/0, yes/no), got {raw!r}")
