"""The baseline: raw Celery doing the same work as a Chorus agent, with nothing of Chorus.

Same broker, same threads pool, JSON, late acks and prefetch 1 (the delivery guarantees Chorus
needs), no task events, no state, no guards. `raw.call` makes the model call an agent makes:
the official SDK against the simulator, with the agent's model, system prompt, output schema
and max_tokens passed in by the producer (`call_request`), so both sides ask the simulator for
the same work; `raw.noop` does nothing.

    RAW_REDIS_URL=... ANTHROPIC_BASE_URL=... celery -A bench.rawcelery worker -Q raw -P threads
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import anthropic
from celery import Celery

QUEUE = "raw"


def config(url: str) -> dict[str, Any]:
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "broker_connection_retry_on_startup": True,
    }


def producer(url: str) -> Celery:
    """A producer-side app for a raw worker on `url`: send by name with `signature`."""
    client = Celery("raw-producer")
    client.conf.update(config(url))
    return client


app = Celery("raw")
app.conf.update(config(os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/0")))

_client_lock = threading.Lock()
_client: anthropic.Anthropic | None = None


def client() -> anthropic.Anthropic:
    global _client
    with _client_lock:
        if _client is None:
            _client = anthropic.Anthropic(max_retries=0, timeout=60)
        return _client


@app.task(name="raw.call")
def call(text: str, request: dict[str, Any]) -> dict[str, Any]:
    return _call(text, request)


@app.task(name="raw.relay")
def relay(previous: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A chain step: the next call takes the previous answer's id as its input."""
    return _call(f"Continue from {previous['id']}", request)


def _call(text: str, request: dict[str, Any]) -> dict[str, Any]:
    """One structured-output call shaped like an agent's (prompt caching marks included)."""
    started = time.time()
    cache = {"type": "ephemeral"}
    reply = client().messages.create(
        model=request["model"],
        max_tokens=request["max_tokens"],
        system=[{"type": "text", "text": request["system"], "cache_control": cache}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": text, "cache_control": cache}]}
        ],
        output_config={"format": {"type": "json_schema", "schema": request["schema"]}},
    )
    json.loads(reply.content[0].text)  # the agent parses its answer too
    return {"started": started, "finished": time.time(), "id": reply.id}


@app.task(name="raw.noop")
def noop() -> None:
    return None
