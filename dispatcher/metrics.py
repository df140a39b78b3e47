"""`chorus metrics`: a Prometheus exporter for the fleet, read from Redis.

Workers count as they record each step (inside the same Lua call, so no extra round trip): steps
by status, model calls, tokens, cost, retries, errors by code and a latency histogram, per agent
and model. Queue lengths are read live, priority sub-lists included, so one number per agent is
the honest backlog for an autoscaler.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import redis

from workers import keys
from workers.registry import AGENTS
from workers.settings import Settings

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
}


def queue_lists(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def collect(client: redis.Redis) -> str:
    """The exposition text (Prometheus format 0.0.4)."""
    raw = cast(dict[bytes, bytes], client.hgetall(keys.METRICS))
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    series: dict[str, list[str]] = defaultdict(list)
    buckets: list[tuple[str, str, float, str]] = []
    for field, value in sorted(fields.items()):
        name, *parts = field.split("|")
        if name in COUNTERS and len(parts) >= 2:
            metric = COUNTERS[name][0]
            labels = {"agent": parts[0], "model": parts[1] or "none"}
            if name == "steps":
                labels["status"] = parts[2]
            number = int(value) / 1_000_000 if name == "cost_micro_usd" else int(value)
            series[metric].append(f"{metric}{_labels(**labels)} {number}")
        elif name == "errors" and len(parts) == 2:
            metric = "chorus_errors_total"
            series[metric].append(f"{metric}{_labels(agent=parts[0], code=parts[1])} {value}")
        elif name == "latency_bucket" and len(parts) == 3:
            metric = "chorus_step_latency_seconds_bucket"
            labels = {"agent": parts[0], "model": parts[1] or "none", "le": parts[2]}
            line = f"{metric}{_labels(**labels)} {value}"
            buckets.append((parts[0], parts[1], float(parts[2]), line))
        elif name in ("latency_sum", "latency_count") and len(parts) == 2:
            metric = f"chorus_step_latency_seconds_{name.split('_')[1]}"
            labels = {"agent": parts[0], "model": parts[1] or "none"}
            series[metric].append(f"{metric}{_labels(**labels)} {value}")
            if name == "latency_count":  # the +Inf bucket equals the count
                inf = {**labels, "le": "+Inf"}
                line = f"chorus_step_latency_seconds_bucket{_labels(**inf)} {value}"
                buckets.append((parts[0], parts[1], float("inf"), line))
    if buckets:  # each series' buckets in increasing `le`, +Inf last
        series["chorus_step_latency_seconds_bucket"] = [line for *_, line in sorted(buckets)]
    with client.pipeline(transaction=False) as pipe:
        for spec in AGENTS.values():
            for name in queue_lists(spec.queue):
                pipe.llen(name)
        lengths = pipe.execute()
    position = 0
    for agent, spec in AGENTS.items():
        for priority in PRIORITY_STEPS:
            labels = {"agent": agent, "queue": spec.queue, "priority": str(priority)}
            series["chorus_queue_length"].append(
                f"chorus_queue_length{_labels(**labels)} {lengths[position]}"
            )
            position += 1
    lines: list[str] = []
    helps = {metric: text for metric, text in COUNTERS.values()}
    helps.update(
        chorus_errors_total="Steps that ended in an error, by stable error code.",
        chorus_queue_length="Messages waiting in an agent queue, per priority sub-list.",
    )
    for metric in sorted(series):
        family = metric.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if metric.startswith("chorus_step_latency_seconds"):
            if metric.endswith("_bucket"):
                lines.append(f"# HELP {family} Agent step latency, model calls included.")
                lines.append(f"# TYPE {family} histogram")
        else:
            kind = "gauge" if metric == "chorus_queue_length" else "counter"
            lines.append(f"# HELP {metric} {helps.get(metric, metric)}")
            lines.append(f"# TYPE {metric} {kind}")
        lines.extend(series[metric])
    return "\n".join(lines) + "\n"


def serve(client: redis.Redis, address: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body = collect(client).encode()
            except redis.RedisError as exc:
                self.send_error(503, f"Redis unavailable: {type(exc).__name__}")
                return
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logging.getLogger("chorus.metrics").debug(format, *args)

    return ThreadingHTTPServer((address, port), Handler)


def add_commands(sub: Any) -> None:
    metrics = sub.add_parser("metrics", help="serve Prometheus metrics for the fleet")
    metrics.add_argument("--address", default="127.0.0.1")
    metrics.add_argument("--port", type=int, default=9808)
    metrics.set_defaults(handler=cmd_metrics)


def cmd_metrics(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    server = serve(client, args.address, args.port)
    print(f"chorus metrics on http://{args.address}:{server.server_address[1]}/metrics")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
