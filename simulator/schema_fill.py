"""Generate JSON that conforms to a JSON schema, worded from the request.

Nothing is specific to an agent or a field: the schema decides the shape, the request's own
words fill the text, and a seed derived from the request makes answers repeatable.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from simulator.scalars import MARK, formatted, integer, number, sized

__all__ = ["MARK", "fill", "salient_words", "seed_for"]

STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "please",
        "so",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    }
)


def salient_words(text: str) -> list[str]:
    """Content words of `text`, in order, without duplicates or stop-words."""
    seen: dict[str, None] = {}
    for word in re.findall(r"[A-Za-z][A-Za-z0-9_'-]*", text):
        lower = word.lower().strip("'-")
        if len(lower) > 1 and lower not in STOP_WORDS:
            seen.setdefault(lower, None)
    return list(seen)


def seed_for(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def fill(
    schema: dict[str, Any], *, words: list[str], seed: int, root: dict[str, Any] | None = None
) -> Any:
    """An instance of `schema`; `root` holds `$defs` for `$ref` resolution."""
    return _Filler(root or schema, words, seed).value(schema, "value", 0)


class _Filler:
    def __init__(self, root: dict[str, Any], words: list[str], seed: int) -> None:
        self.root = root
        self.words = words or ["request"]
        self.seed = seed
        self.counter = 0

    def _next(self) -> int:
        self.counter += 1
        return seed_for(f"{self.seed}:{self.counter}")

    def value(self, schema: dict[str, Any], name: str, depth: int) -> Any:
        schema = _with_described_constraints(self._resolve(schema))
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._choose(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self._resolve(s) for s in schema[key]]
                usable = [s for s in options if s.get("type") != "null"] or options
                return self.value(usable[0], name, depth)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self._resolve(part))
            return self.value(merged, name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self._next() % 2 == 0
        if kind == "null":
            return None
        return self._string(schema, name)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            target: Any = self.root
            for part in str(schema["$ref"]).removeprefix("#/").split("/"):
                target = target[part]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        return schema

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        if depth > 6:
            properties = {k: v for k, v in properties.items() if k in schema.get("required", [])}
        out = {key: self.value(sub, key, depth + 1) for key, sub in properties.items()}
        extra = schema.get("additionalProperties")
        wanted = int(schema.get("minProperties", 0)) - len(out)
        if isinstance(extra, dict) and wanted > 0:
            for i in range(wanted):
                key = f"{self.words[i % len(self.words)]}_{i + 1}"
                out[key] = self.value(extra, key, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix: list[dict[str, Any]] = schema.get("prefixItems", [])
        low = int(schema.get("minItems", len(prefix)))
        high = int(schema.get("maxItems", max(low, 3)))
        count = min(max(low, min(3, high)), high) if depth <= 6 else low
        if count == 0 and high > 0 and depth <= 6:
            count = min(2, high)
        if prefix:
            count = max(low, min(len(prefix), high))
        items = schema.get("items", {"type": "string"})
        singular = name[:-1] if name.endswith("s") else name
        out: list[Any] = []
        for i in range(count):
            item = prefix[i] if i < len(prefix) else items
            value = self.value(item, f"{singular} {i + 1}", depth + 1)
            for _ in range(8 if schema.get("uniqueItems") else 0):
                if value not in out:
                    break
                value = self.value(item, f"{singular} {i + 1}", depth + 1)
            out.append(value)
        return out

    def _integer(self, schema: dict[str, Any]) -> int:
        return integer(schema, self._next())

    def _number(self, schema: dict[str, Any]) -> float:
        return number(schema, self._next())

    def _string(self, schema: dict[str, Any], name: str) -> str:
        special = formatted(schema.get("format"), self.words[0], self._next)
        if special is not None:
            return special
        start = self._next() % len(self.words)
        picked = [
            self.words[(start + i) % len(self.words)] for i in range(min(10, len(self.words)))
        ]
        label = name.replace("_", " ")
        return sized(f"{MARK} {label}: {' '.join(picked)}.", picked, schema)

    def _choose(self, options: list[Any]) -> Any:
        """The option that best matches the request's words; else a repeatable pick."""
        best, best_score = None, 0
        for option in options:
            score = _match(str(option), self.words)
            if score > best_score:
                best, best_score = option, score
        if best is not None:
            return best
        return options[self._next() % len(options)]


_DESCRIBED = re.compile(r"\{((?:\s*\w+:\s*-?[\d.]+\s*,?)+)\}\s*$")


def _with_described_constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """Constraints the API does not enforce travel in the description as `{maxItems: 8}` (the
    SDK's transform_schema); a model reads and follows them, so the simulator does too."""
    description = schema.get("description")
    if not isinstance(description, str):
        return schema
    found = _DESCRIBED.search(description)
    if not found:
        return schema
    extra: dict[str, Any] = {}
    for part in found.group(1).split(","):
        key, _, raw = part.partition(":")
        if key.strip() and raw.strip():
            number = float(raw)
            extra.setdefault(key.strip(), int(number) if number.is_integer() else number)
    return {**extra, **schema}


def _match(option: str, words: list[str]) -> int:
    """How many of the option's parts share a 4+ letter stem with a request word."""
    score = 0
    for part in re.split(r"[_\W]+", option.lower()):
        if len(part) < 3:
            continue
        stem = part[: max(4, min(len(part), 6))] if len(part) >= 4 else part
        if any(w.startswith(stem[:4]) and (len(w) >= 4 or w == part) for w in words):
            score += 1
    return score
