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
    fault_rates: dict[str, float] = field(default_factory=dict)
    """Fault name -> probability per request (see simulator.faults.FAULTS)."""
    fault_schedule: tuple[str, ...] = ()
    """Faults for the first requests, in order ("ok" for none); the rates apply after."""
    retry_after: float = 0.2
    """Seconds an injected 429 asks the client to wait."""
    hang_seconds: float = 3600.0
    """How long an injected hang keeps the client waiting."""
    min_cache_tokens: int = 1024
    """Shortest prefix the prompt cache stores."""
    no_forced_tool_models: tuple[str, ...] = ("claude-sonnet-5-5", "claude-opus-5-5")
    """Models that answer a forced tool_choice with 400, as the real 5.5 models do."""
    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None
    tool_turns: int = 1
    """Tool-calling turns (tool_choice auto) in one tool loop before the final answer."""
    parallel_tools: int = 2
    """Most distinct tools called in one turn when offered; 1 never calls them in parallel."""
    tool_preamble: bool = True
    """Start each tool turn with a short text block."""
    batch_delay: float = 1.0
    """Seconds from a Message Batch's creation until it is processed and ends."""
    batch_error_rate: float = 0.0
    """Share of batched requests that end `errored` (api_error)."""
    batch_expire_rate: float = 0.0
    """Share of batched requests that end `expired`."""
