"""The baseline: raw Celery doing the same work as a Chorus agent, with nothing of Chorus.

Same broker, same threads pool, JSON, late acks and prefetch 1 (the delivery guarantees Chorus
needs), no task events, no state, no guards. `raw.call` makes the same kind of model call an
agent makes (the official SDK against the simulator, forced tool use); `raw.noop` does nothing.

    RAW_REDIS_URL=... ANTHROPIC_BASE_URL=... celery -A bench.rawcelery worker -Q raw -P threads
"""

from __future__ import annotations

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

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
}


def client() -> anthropic.Anthropic:
    global _client
    with _client_lock:
        if _client is None:
            _client = anthropic.Anthropic(max_retries=0, timeout=60)
        return _client


@app.task(name="raw.call")
def call(text: str) -> dict[str, Any]:
    return _call(text)


@app.task(name="raw.relay")
def relay(previous: dict[str, Any]) -> dict[str, Any]:
    """A chain step: the next call takes the previous answer's id as its input."""
    return _call(f"Continue from {previous['id']}")


def _call(text: str) -> dict[str, Any]:
    started = time.time()
    reply = client().messages.create(
        model=os.environ.get("RAW_MODEL", "claude-haiku-5-5"),
        max_tokens=1024,
        system="You summarize requests.",
        messages=[{"role": "user", "content": text}],
        tools=[{"name": "answer", "description": "The answer.", "input_schema": SCHEMA}],
        tool_choice={"type": "tool", "name": "answer"},
    )
    return {"started": started, "finished": time.time(), "id": reply.id}


@app.task(name="raw.noop")
def noop() -> None:
    return None
