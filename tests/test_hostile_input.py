"""Hostile input straight onto the agent queues: every malformed message ends as an error result
and a dead letter, and the worker goes on serving good messages. Pickle is refused, not run."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection

from dispatcher import Dispatcher
from messages import AgentMessage, MessageType
from messages.envelope import MAX_PAYLOAD_BYTES
from workers import keys
from workers.registry import AGENTS

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner)
)
VALID = AgentMessage.root(recipient="summarizer", payload={"text": "Summarize this"}).to_dict()
REQUIRED = ["task_id", "sender", "recipient", "message_type", "payload"]
"""Fields without a default: dropping one of the others leaves a valid message."""


@st.composite
def hostile_messages(draw: st.DrawFn) -> Any:
    """Valid-looking envelopes with one field broken, or garbage of any JSON shape."""
    kind = draw(st.sampled_from(["garbage", "drop", "retype", "forge", "unicode"]))
    if kind == "garbage":
        return draw(json_value)
    message = dict(VALID, message_id=draw(st.uuids()).hex, task_id=draw(st.uuids()).hex)
    field = draw(st.sampled_from(sorted(VALID)))
    if kind == "drop":
        message.pop(draw(st.sampled_from(REQUIRED)))
    elif kind == "retype":
        message[field] = draw(json_value.filter(lambda v: type(v) is not type(VALID[field])))
    elif kind == "forge":  # a depth without a parent, a parent at depth 0, an absurd depth
        message.update(
            draw(
                st.sampled_from(
                    [
                        {"depth": 3, "parent_message_id": None},
                        {"depth": 0, "parent_message_id": "f" * 32},
                        {"depth": 10**9},
                        {"sender": "../../etc"},
                        {"recipient": "admin"},
                    ]
                )
            )
        )
    else:
        message["payload"] = {"text": draw(st.text(min_size=1, max_size=50)) + "\u202e\x00\ud800"}
    return message


def test_malformed_messages_become_error_results_and_dead_letters(
    dispatcher: Dispatcher, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    seen = {"count": 0}

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=hostile_messages(), agent=st.sampled_from(sorted(AGENTS)))
    def check(body: Any, agent: str) -> None:
        spec = AGENTS[agent]
        if isinstance(body, dict):
            # Fresh ids per example: hypothesis replays the same draws, and a message id seen
            # before is (rightly) answered from its stored result without a second dead letter.
            for name in ("message_id", "task_id"):
                if isinstance(body.get(name), str):
                    body = {**body, name: uuid.uuid4().hex}
        before = client.xlen(keys.DEAD_LETTERS)
        result = dispatcher.app.send_task(spec.task_name, args=[body], queue=spec.queue)
        reply = AgentMessage.from_dict(result.get(timeout=30))
        assert reply.message_type is MessageType.ERROR
        assert reply.payload["code"] in {"invalid_message", "wrong_recipient", "depth_exceeded"}
        assert client.xlen(keys.DEAD_LETTERS) == before + 1
        seen["count"] += 1

    check()
    assert seen["count"] >= 25
    good = dispatcher.submit("Summarize the aftermath", pattern="pipeline", steps=["summarizer"])
    assert good.wait(30).status == "done"  # every worker is still serving


def test_an_oversized_payload_is_refused_with_the_limit_named(dispatcher: Dispatcher) -> None:
    body = dict(VALID, payload={"text": "x" * 1000, "context": {"blob": "y" * MAX_PAYLOAD_BYTES}})
    spec = AGENTS["summarizer"]
    reply = AgentMessage.from_dict(
        dispatcher.app.send_task(spec.task_name, args=[body], queue=spec.queue).get(timeout=30)
    )
    assert reply.payload["code"] == "invalid_message"
    assert f"{MAX_PAYLOAD_BYTES}-byte limit" in reply.payload["message"]


class Exploit:
    """Unpickling this would create a file: the proof that pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickled_message_is_refused_not_executed(
    dispatcher: Dispatcher, redis_url: str, tmp_path: Path, worker_logs: Any
) -> None:
    marker = tmp_path / "pickle-ran"
    spec = AGENTS["summarizer"]
    with Connection(redis_url) as connection:
        producer = connection.Producer()
        producer.publish(
            pickle.dumps([[Exploit(marker)], {}, {}]),
            content_encoding="binary",
            exchange="",
            routing_key=spec.queue,
            headers={"task": spec.task_name, "id": "pickle-attempt", "lang": "py"},
            content_type="application/x-python-serialize",
        )

    def refused() -> bool:
        return (
            "pickle-attempt" in worker_logs() or "application/x-python-serialize" in worker_logs()
        )

    from dispatcher.embedded import wait_until

    wait_until(refused, timeout=20, what="the worker to refuse the pickle")
    assert not marker.exists()
    good = dispatcher.submit("Summarize after the pickle", pattern="pipeline", steps=["summarizer"])
    assert good.wait(30).status == "done"
