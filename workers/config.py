"""An optional TOML file for model tiers and prices (CHORUS_CONFIG=/path/to/chorus.toml).

    [tiers]
    fast = "claude-haiku-5-5"
    strong = "claude-sonnet-5-5"

    [prices.claude-sonnet-5-5]   # integer micro-dollars per million tokens
    input = 2000000
    output = 10000000
    cache_write_5m = 2500000
    cache_write_1h = 4000000
    cache_read = 100000
    # long_context = { input = ..., output = ..., ... }   with long_context_threshold = 100000

    [rate_limits.claude-sonnet-5-5]   # per minute, as on the Console's limits page
    rpm = 4000
    itpm = 2000000
    otpm = 400000

A price given here replaces the built-in one for that model; other models keep theirs.
Rate limits are optional: without them the fleet learns them from the API's headers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from messages.errors import ChorusError
from workers.guards import RateLimit
from workers.models import Price, Tier

PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
TIERS: tuple[Tier, ...] = ("fast", "strong")


class ConfigError(ChorusError, ValueError):
    """The config file cannot be used; the message names the file and the entry."""


def load_config(path: str | Path) -> tuple[dict[Tier, str], dict[str, Price]]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read CHORUS_CONFIG {path}: {exc}") from None
    tiers: dict[Tier, str] = {}
    for name, model in (data.get("tiers") or {}).items():
        if name not in TIERS or not isinstance(model, str) or not model:
            raise ConfigError(f"{path}: [tiers] {name!r} must be one of {TIERS} = a model id")
        tiers[name] = model
    prices = {
        model: _price(path, model, table) for model, table in (data.get("prices") or {}).items()
    }
    return tiers, prices


def load_rate_limits(path: str | Path) -> dict[str, RateLimit]:
    data = tomllib.loads(Path(path).read_text())
    limits: dict[str, RateLimit] = {}
    for model, table in (data.get("rate_limits") or {}).items():
        where = f"{path}: [rate_limits.{model}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        values: dict[str, int] = {}
        for name in ("rpm", "itpm", "otpm"):
            value = table.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where} {name} must be a non-negative integer per minute")
            values[name] = value
        limits[model] = RateLimit(**values)
    return limits


def _price(path: str | Path, model: str, table: Any) -> Price:
    where = f"{path}: [prices.{model}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    values: dict[str, int] = {}
    for name in PRICE_FIELDS:
        value = table.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where} {name} must be a non-negative integer (micro-dollars/MTok)")
        values[name] = value
    long_context = None
    if "long_context" in table:
        long_context = _price(path, f"{model}.long_context", table["long_context"])
    threshold = table.get("long_context_threshold", 0)
    if not isinstance(threshold, int) or (long_context is not None and threshold <= 0):
        raise ConfigError(f"{where} long_context_threshold must be a positive integer")
    return Price(**values, long_context=long_context, long_context_threshold=threshold)
