"""The fleet's tool counters, in the metrics hash `chorus metrics` exports (keys.METRICS).

Fields are `tool_calls|agent|tool`, `tool_errors|agent|tool`, `tool_latency_sum|agent|tool`
and `tool_latency_bucket|agent|tool|le` (cumulative; the count is tool_calls). They are counted
in the transaction that journals a call's outcome (workers/journal.py), so a call counts once
for each time it really ran, and a replayed one not again. Light to import: the exporter reads
the bounds from here.
"""

from __future__ import annotations

from typing import Any

from workers import keys

TOOL_LATENCY_BUCKETS = ("0.01", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30")
"""Upper bounds (seconds) of the tool-latency histogram."""


def count_call(pipe: Any, agent: str, tool: str, *, seconds: float, failed: bool) -> None:
    """Queue one call's counters on a Redis pipeline."""
    labels = f"{agent}|{tool}"
    pipe.hincrby(keys.METRICS, f"tool_calls|{labels}", 1)
    if failed:
        pipe.hincrby(keys.METRICS, f"tool_errors|{labels}", 1)
    pipe.hincrbyfloat(keys.METRICS, f"tool_latency_sum|{labels}", seconds)
    for bound in TOOL_LATENCY_BUCKETS:
        if seconds <= float(bound):
            pipe.hincrby(keys.METRICS, f"tool_latency_bucket|{labels}|{bound}", 1)
