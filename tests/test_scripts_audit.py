"""The audit stream's bounds and its watch, against a real Redis and no workers: with no auditor
draining it, the stream stays within CHORUS_AUDIT_MAXLEN events and CHORUS_AUDIT_MAX_AGE
seconds, and workers say so."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from messages.status import StepStatus
from tests.private_redis import private_redis
from workers import keys
from workers.audit_events import AuditStream, undrained
from workers.audit_watch import AuditWatchThread
from workers.state import StepRecord, TaskState


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    yield from private_redis(tmp_path_factory)


@pytest.fixture(autouse=True)
def exact_trims(client: redis.Redis) -> None:
    """One entry per stream node, so the approximate trims (MAXLEN ~, MINID ~) are exact."""
    client.flushdb()
    client.config_set("stream-node-max-entries", 1)


def step(number: int) -> StepRecord:
    return StepRecord(
        task_id="t-audit",
        input_message_id=f"in-{number}",
        agent="analyst",
        status=StepStatus.OK,
        message={"message_id": f"out-{number}"},
    )


def test_the_stream_keeps_at_most_maxlen_events(client: redis.Redis) -> None:
    state = TaskState(client, ttl=60, audit_maxlen=5)
    for number in range(20):
        state.begin_step("t-audit", f"in-{number}", "analyst")
        state.record_step(step(number), final_status=None)
    assert client.xlen(keys.AUDIT) == 5


def test_events_older_than_the_max_age_are_trimmed_by_the_next_write(client: redis.Redis) -> None:
    hour_ago = int((time.time() - 3600) * 1000)
    for n in range(3):
        client.xadd(keys.AUDIT, {"kind": "old"}, id=f"{hour_ago}-{n}")
    state = TaskState(client, ttl=60, audit_max_age=600)
    state.record_step(step(1), final_status=None)
    assert [fields[b"kind"] for _, fields in client.xrange(keys.AUDIT)] == [b"step"]

    client.delete(keys.AUDIT)
    for n in range(3):
        client.xadd(keys.AUDIT, {"kind": "old"}, id=f"{hour_ago}-{n}")
    state.submit("t-audit-2", pattern="route", root_message={})  # the pipeline path trims too
    assert [fields[b"kind"] for _, fields in client.xrange(keys.AUDIT)] == [b"submitted"]


def test_the_oldest_id_kept_follows_the_clock() -> None:
    assert AuditStream(max_age=0).minid(now=1_000.0) == ""
    assert AuditStream(max_age=60).minid(now=1_000.5) == "940500-0"


def test_audit_off_writes_no_event_anywhere(client: redis.Redis) -> None:
    state = TaskState(client, ttl=60, audit=False)
    state.submit("t-off", pattern="route", root_message={})
    state.begin_step("t-off", "in-1", "analyst")
    state.record_step(step(1), final_status="done")
    state.dead_letter(task_id="t-off", agent="analyst", code="x", error="y", body="z")
    assert not client.exists(keys.AUDIT)


def test_a_drained_or_fresh_stream_raises_no_warning(client: redis.Redis) -> None:
    assert undrained(client, older_than=60) is None
    TaskState(client, ttl=60).submit("t-w", pattern="route", root_message={})
    assert undrained(client, older_than=60) is None


def test_an_undrained_stream_is_reported_with_what_reads_it(client: redis.Redis) -> None:
    TaskState(client, ttl=60).submit("t-w", pattern="route", root_message={})
    later = time.time() + 600

    warning = undrained(client, older_than=300, now=later)
    assert warning is not None
    assert "1 event(s), the oldest 600 s old" in warning
    assert "no auditor has ever read it" in warning
    assert "chorus auditor" in warning

    client.xgroup_create(keys.AUDIT, keys.AUDITORS, id="0")
    client.xreadgroup(keys.AUDITORS, "auditor-1", {keys.AUDIT: ">"}, count=10)
    warning = undrained(client, older_than=300, now=later)
    assert warning is not None
    assert "1 auditor(s) known" in warning
    assert "1 event(s) read and not written" in warning


def test_the_workers_watch_logs_the_warning(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    TaskState(client, ttl=60).submit("t-w", pattern="route", root_message={})
    watch = AuditWatchThread(client, interval=300)
    with caplog.at_level("WARNING", logger="chorus.audit"):
        watch.check()
        assert not caplog.records
        watch.check(now=time.time() + 600)
    assert "Start `chorus auditor`" in caplog.text
