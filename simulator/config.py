"""Simulator settings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    latency: float = 0.0
    """Seconds added to every /v1/messages answer (awaited, so concurrent calls overlap)."""
    jitter: float = 0.0
    """Up to this many extra seconds, drawn per call."""
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    """When set, only this key is accepted; otherwise any non-empty key is."""
