"""Numbers and strings that sit inside every bound a JSON schema sets.

Split from schema_fill so the walk over a schema's shape stays apart from the arithmetic of
bounds, steps, formats and lengths. `pick` is always the filler's repeatable random integer,
so the same request yields the same values.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from typing import Any

MARK = "[simulated]"

FIXED_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "12:00:00",
    "duration": "PT1H",
    "email": "simulated@example.com",
    "hostname": "simulated.example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}
URI_FORMATS = frozenset({"uri", "url", "iri", "uri-reference", "iri-reference"})


def _bound(schema: dict[str, Any], key: str) -> float | None:
    value = schema.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _step(schema: dict[str, Any]) -> float | None:
    step = _bound(schema, "multipleOf")
    return step if step is not None and step > 0 else None


def integer(schema: dict[str, Any], pick: int) -> int:
    """An integer inside min/max (inclusive or exclusive) and on multipleOf, when set."""
    step = _step(schema)
    unit = int(step) if step is not None and float(step).is_integer() else 1
    lows = [math.ceil(v) for v in [_bound(schema, "minimum")] if v is not None]
    lows += [math.floor(v) + 1 for v in [_bound(schema, "exclusiveMinimum")] if v is not None]
    highs = [math.floor(v) for v in [_bound(schema, "maximum")] if v is not None]
    highs += [math.ceil(v) - 1 for v in [_bound(schema, "exclusiveMaximum")] if v is not None]
    span = 10 * unit
    low = max(lows) if lows else (min(highs) - span if highs else 0)
    high = min(highs) if highs else low + span
    first = -(-low // unit) * unit
    count = (high - first) // unit + 1
    return first + (pick % max(1, count)) * unit


def number(schema: dict[str, Any], pick: int) -> float:
    """A number well inside the bounds (0.55..0.94 of the way up), so open bounds hold too."""
    lows = [
        v for v in (_bound(schema, "minimum"), _bound(schema, "exclusiveMinimum")) if v is not None
    ]
    highs = [
        v for v in (_bound(schema, "maximum"), _bound(schema, "exclusiveMaximum")) if v is not None
    ]
    low = float(max(lows)) if lows else (float(min(highs)) - 1.0 if highs else 0.0)
    high = float(min(highs)) if highs else low + 1.0
    step = _step(schema)
    if step is not None:
        first = math.ceil(low / step)
        count = max(1, math.floor(high / step) - first + 1)
        value = round((first + pick % count) * step, 12)
        return value if _inside(schema, value) else float(first * step)
    exact = low + (high - low) * (0.55 + (pick % 40) / 100)
    rounded = round(exact, 2)
    return rounded if _inside(schema, rounded) else exact


def _inside(schema: dict[str, Any], value: float) -> bool:
    checks: list[tuple[str, Callable[[float, float], bool]]] = [
        ("minimum", lambda v, b: v >= b),
        ("exclusiveMinimum", lambda v, b: v > b),
        ("maximum", lambda v, b: v <= b),
        ("exclusiveMaximum", lambda v, b: v < b),
    ]
    for key, ok in checks:
        bound = _bound(schema, key)
        if bound is not None and not ok(value, bound):
            return False
    return True


def formatted(fmt: object, word: str, pick: Callable[[], int]) -> str | None:
    """A valid value for a known `format`; None means free text is fine."""
    if not isinstance(fmt, str):
        return None
    if fmt in FIXED_FORMATS:
        return FIXED_FORMATS[fmt]
    if fmt in URI_FORMATS:
        slug = re.sub(r"[^a-z0-9-]+", "-", word.lower()).strip("-") or "request"
        return f"https://example.com/simulated/{slug}"
    if fmt == "uuid":
        value = pick()
        return str(uuid.UUID(int=(value << 64) | value, version=4))
    return None


def sized(text: str, words: list[str], schema: dict[str, Any]) -> str:
    """`text` fitted to minLength/maxLength and, when it can be, to `pattern`.

    Too short a maxLength for the mark gets bare request words; a short text grows with more of
    them; a pattern the sentence misses is tried against single words and joins of them.
    """
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", 10_000))
    if high < len(MARK) + 6:
        text = " ".join(words)
    extra = 0
    while len(text) < low:
        text = f"{text} {words[extra % len(words)]}"
        extra += 1
    text = text[:high].rstrip() if len(text) > high else text
    text = text.ljust(low, "x")
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not _matches(pattern, text):
        return next((c for c in _candidates(words, low, high) if _matches(pattern, c)), text)
    return text


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True  # not a Python regex: nothing to check it with


def _candidates(words: list[str], low: int, high: int) -> list[str]:
    joins = ["-".join(words[:3]), "_".join(words[:3]), "".join(words[:3])]
    forms = [w for word in words for w in (word, word.capitalize(), word.upper())]
    plain = ["simulated", "Simulated", "SIMULATED", "sim", "x", "0", "1"]
    return [c for c in [*forms, *joins, *plain] if low <= len(c) <= high]
