"""The AgentMessage envelope: constructors, lossless JSON, and one clear error per bad message."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages import SCHEMA_VERSION, AgentMessage, InvalidMessageError, MessageType


def valid() -> dict[str, Any]:
    return AgentMessage.root(recipient="router", payload={"text": "hello"}).to_dict()


def test_root_message_starts_a_task_at_depth_zero() -> None:
    root = AgentMessage.root(recipient="router", payload={"text": "hi"})
    assert root.depth == 0
    assert root.parent_message_id is None
    assert root.sender == "producer"
    assert root.message_type is MessageType.TASK
    assert root.schema_version == SCHEMA_VERSION
    assert root.timestamp.tzinfo is not None
    assert root.timestamp.utcoffset() == timedelta(0)


def test_child_links_to_its_parent_one_level_deeper() -> None:
    root = AgentMessage.root(recipient="router", payload={"text": "hi"})
    child = root.child(sender="router", recipient="research", payload={"text": "hi"})
    grandchild = child.child(
        sender="research", recipient="producer", payload={}, message_type=MessageType.RESULT
    )
    assert child.task_id == root.task_id == grandchild.task_id
    assert child.parent_message_id == root.message_id
    assert grandchild.parent_message_id == child.message_id
    assert (child.depth, grandchild.depth) == (1, 2)
    assert len({root.message_id, child.message_id, grandchild.message_id}) == 3


def test_timestamps_in_other_zones_are_normalised_to_utc() -> None:
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    message = AgentMessage.create(**{**valid(), "timestamp": plus_two.isoformat()})
    assert message.timestamp == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert message.timestamp.tzinfo == UTC


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
names = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")


# Generation time depends on the machine's load, not on the code under test.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.dictionaries(st.text(), json_values, max_size=5),
    sender=names,
    recipient=names,
    retries=st.integers(min_value=0, max_value=50),
    hops=st.integers(min_value=0, max_value=6),
    when=st.datetimes(timezones=st.just(UTC)),
)
def test_json_round_trip_is_lossless(
    payload: dict[str, Any],
    sender: str,
    recipient: str,
    retries: int,
    hops: int,
    when: datetime,
) -> None:
    message = AgentMessage.root(recipient=recipient, payload=payload)
    for _ in range(hops):
        message = message.child(sender=sender, recipient=recipient, payload=payload)
    message = message.model_copy(update={"timestamp": when, "retry_count": retries})

    assert AgentMessage.from_json(message.to_json()) == message
    assert AgentMessage.from_dict(json.loads(json.dumps(message.to_dict()))) == message


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"sender": None}, "sender", "string"),
        ({"task_id": ""}, "task_id", "pattern"),
        ({"recipient": "Not An Agent"}, "recipient", "pattern"),
        ({"message_type": "gossip"}, "message_type", "'task', 'result' or 'error'"),
        ({"payload": ["not", "an", "object"]}, "payload", "dictionary"),
        ({"timestamp": "2026-11-25T10:00:00"}, "timestamp", "timezone"),
        ({"retry_count": -1}, "retry_count", "greater than or equal to 0"),
        ({"depth": "1"}, "depth", "integer"),
        ({"depth": True}, "depth", "integer"),
        ({"depth": 3}, "depth", "must be 0 for a root message"),
        ({"parent_message_id": "abc", "depth": 0}, "depth", "at least 1"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"surprise": 1}, "surprise", "unknown field"),
    ],
)
def test_invalid_message_names_the_field_and_the_reason(
    change: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        AgentMessage.from_dict({**valid(), **change})
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert field in str(caught.value)


def test_missing_field_is_reported_as_required() -> None:
    data = valid()
    del data["recipient"]
    with pytest.raises(InvalidMessageError, match="'recipient': field required"):
        AgentMessage.from_dict(data)


def test_message_cannot_be_its_own_parent() -> None:
    data = {**valid(), "depth": 1}
    data["parent_message_id"] = data["message_id"]
    with pytest.raises(InvalidMessageError) as caught:
        AgentMessage.from_dict(data)
    assert caught.value.field == "parent_message_id"


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "null", b"\xff\xfe"])
def test_non_object_json_is_refused_clearly(raw: str | bytes) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        AgentMessage.from_json(raw)
    assert caught.value.field == "<message>"


def test_payload_must_be_plain_json() -> None:
    with pytest.raises(InvalidMessageError, match="payload"):
        AgentMessage.root(recipient="router", payload={"when": datetime.now(UTC)})
    with pytest.raises(InvalidMessageError, match="payload"):
        AgentMessage.root(recipient="router", payload={"x": float("nan")})


def test_messages_package_imports_neither_celery_nor_redis() -> None:
    code = (
        "import sys, messages; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'celery', 'kombu', 'redis'}]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
