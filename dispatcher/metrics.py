"""`chorus metrics`: a Prometheus exporter for the fleet, read from Redis.

Workers count as they record each step (inside the same Lua call, lib/step_metrics.lua, so no
extra round trip): steps by status, model calls, tokens, cost, retries, errors by code and a
latency histogram, per agent and model, all in one Redis hash summed across the fleet.
`FleetCollector` turns that hash into prometheus_client metric families on every scrape; queue
lengths are read live, priority sub-lists included, so one number per agent is the honest
backlog for an autoscaler.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from workers import keys, redis_urls
from workers.registry import AGENTS
from workers.settings import Settings
from workers.tool_metrics import TOOL_LATENCY_BUCKETS

PRIORITY_SEPARATOR = "\x06\x16"
"""kombu's Redis transport keeps priority N > 0 of queue Q in the list Q + separator + N."""
PRIORITY_STEPS = (0, 3, 6, 9)

COUNTERS = {
    "steps": ("chorus_steps_total", "Agent steps recorded, by outcome."),
    "calls": ("chorus_model_calls_total", "Model calls answered (stricter retries included)."),
    "input_tokens": ("chorus_input_tokens_total", "Uncached input tokens billed."),
    "output_tokens": ("chorus_output_tokens_total", "Output tokens billed."),
    "cache_creation_input_tokens": (
        "chorus_cache_creation_input_tokens_total",
        "Input tokens written to the prompt cache.",
    ),
    "cache_read_input_tokens": (
        "chorus_cache_read_input_tokens_total",
        "Input tokens read from the prompt cache.",
    ),
    "cost_micro_usd": ("chorus_cost_usd_total", "Spend in USD."),
    "retries": ("chorus_retries_total", "Transport retries (429, 529, 5xx, timeouts)."),
    "duplicates": (
        "chorus_duplicate_steps_total",
        "Second deliveries of a message that raced the first and paid for its calls again.",
    ),
}
"""Redis field prefix -> exported counter and its help; each field is `prefix|agent|model`."""

ERRORS = ("chorus_errors_total", "Steps that ended in an error, by stable error code.")
LATENCY = ("chorus_step_latency_seconds", "Agent step latency, model calls included.")
QUEUE = ("chorus_queue_length", "Messages waiting in an agent queue, per priority sub-list.")
TOOL_CALLS = ("chorus_tool_calls_total", "Tool calls run (a replayed call is not run again).")
TOOL_ERRORS = ("chorus_tool_errors_total", "Tool calls that went back to the model as errors.")
TOOL_LATENCY = ("chorus_tool_latency_seconds", "Tool call duration, timeouts at their limit.")


def queue_lists(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS]


class FleetCollector:
    """A prometheus_client collector over the fleet's counters in Redis (read per scrape)."""

    def __init__(self, client: redis.Redis, queues: Mapping[str, str] | None = None) -> None:
        self._redis = client
        self._queues = dict(queues) if queues is not None else _agent_queues()
        """Agent name -> its queue, for the backlog gauges."""

    def collect(self) -> Iterator[Metric]:
        raw = cast(dict[bytes, bytes], self._redis.hgetall(keys.METRICS))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        yield from self._counters(fields)
        yield from self._latency(fields)
        yield from tool_metrics(fields)
        yield self._queue_lengths()

    def _counters(self, fields: dict[str, str]) -> Iterator[Metric]:
        families = {
            prefix: CounterMetricFamily(
                name, text, labels=["agent", "model", *(["status"] if prefix == "steps" else [])]
            )
            for prefix, (name, text) in COUNTERS.items()
        }
        errors = CounterMetricFamily(*ERRORS, labels=["agent", "code"])
        for field, value in sorted(fields.items()):
            prefix, *parts = field.split("|")
            if prefix in families and len(parts) == (3 if prefix == "steps" else 2):
                agent, model, *status = parts
                number = int(value) / 1_000_000 if prefix == "cost_micro_usd" else int(value)
                families[prefix].add_metric([agent, model or "none", *status], number)
            elif prefix == "errors" and len(parts) == 2:
                errors.add_metric(parts, int(value))
        yield from (family for family in families.values() if family.samples)
        if errors.samples:
            yield errors

    def _latency(self, fields: dict[str, str]) -> Iterator[Metric]:
        buckets: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        sums: dict[tuple[str, str], float] = {}
        counts: dict[tuple[str, str], int] = {}
        for field, value in fields.items():
            prefix, *parts = field.split("|")
            if prefix == "latency_bucket" and len(parts) == 3:
                buckets[(parts[0], parts[1])][parts[2]] = int(value)
            elif prefix == "latency_sum" and len(parts) == 2:
                sums[(parts[0], parts[1])] = float(value)
            elif prefix == "latency_count" and len(parts) == 2:
                counts[(parts[0], parts[1])] = int(value)
        if not counts:
            return
        bounds = sorted({le for series in buckets.values() for le in series}, key=float)
        histogram = HistogramMetricFamily(*LATENCY, labels=["agent", "model"])
        for agent, model in sorted(counts):
            series = buckets.get((agent, model), {})
            # Cumulative already (a step counts in every bucket it fits); +Inf is the count.
            cumulative = [(le, float(series.get(le, 0))) for le in bounds]
            cumulative.append(("+Inf", float(counts[(agent, model)])))
            histogram.add_metric(
                [agent, model or "none"], cumulative, sum_value=sums.get((agent, model), 0.0)
            )
        yield histogram

    def _queue_lengths(self) -> Metric:
        with self._redis.pipeline(transaction=False) as pipe:
            for queue in self._queues.values():
                for name in queue_lists(queue):
                    pipe.llen(name)
            lengths = iter(pipe.execute())
        gauge = GaugeMetricFamily(*QUEUE, labels=["agent", "queue", "priority"])
        for agent, queue in self._queues.items():
            for priority in PRIORITY_STEPS:
                gauge.add_metric([agent, queue, str(priority)], int(next(lengths)))
        return gauge


def tool_metrics(fields: dict[str, str]) -> Iterator[Metric]:
    """Calls, errors and latency per agent and tool (`tool_*|agent|tool` fields, counted by
    workers/tool_metrics.py as each call's outcome is journaled)."""
    calls = CounterMetricFamily(*TOOL_CALLS, labels=["agent", "tool"])
    errors = CounterMetricFamily(*TOOL_ERRORS, labels=["agent", "tool"])
    counts: dict[tuple[str, str], int] = {}
    sums: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for field, value in sorted(fields.items()):
        prefix, *parts = field.split("|")
        if prefix == "tool_calls" and len(parts) == 2:
            counts[(parts[0], parts[1])] = int(value)
            calls.add_metric(parts, int(value))
        elif prefix == "tool_errors" and len(parts) == 2:
            errors.add_metric(parts, int(value))
        elif prefix == "tool_latency_sum" and len(parts) == 2:
            sums[(parts[0], parts[1])] = float(value)
        elif prefix == "tool_latency_bucket" and len(parts) == 3:
            buckets[(parts[0], parts[1])][parts[2]] = int(value)
    if not counts:
        return
    yield calls
    if errors.samples:
        yield errors
    histogram = HistogramMetricFamily(*TOOL_LATENCY, labels=["agent", "tool"])
    for labels in sorted(counts):
        series = [(le, float(buckets[labels].get(le, 0))) for le in TOOL_LATENCY_BUCKETS]
        series.append(("+Inf", float(counts[labels])))
        histogram.add_metric(list(labels), series, sum_value=sums.get(labels, 0.0))
    yield histogram


def _agent_queues() -> dict[str, str]:
    return {agent: spec.queue for agent, spec in AGENTS.items()}


def collect(client: redis.Redis) -> str:
    """The exposition text (Prometheus text format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(client))
    return generate_latest(registry).decode()


def serve(client: redis.Redis, address: str, port: int) -> ThreadingHTTPServer:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(client))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body = generate_latest(registry)
            except redis.RedisError as exc:
                self.send_error(503, f"Redis unavailable: {type(exc).__name__}")
                return
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logging.getLogger("chorus.metrics").debug(format, *args)

    return ThreadingHTTPServer((address, port), Handler)


def cmd_metrics(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    client = redis_urls.client(
        settings.redis_url,
        master=settings.sentinel_master,
        sentinel_password=settings.sentinel_password,
        health_check_interval=30,
    )
    server = serve(client, args.address, args.port)
    print(f"chorus metrics on http://{args.address}:{server.server_address[1]}/metrics")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
