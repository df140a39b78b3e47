"""The SQL audit trail: every message and transition lands in SQL, off the agents' hot path,
and answers "what did agent X do, and when" after Redis has forgotten the task."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from dispatcher import Dispatcher
from dispatcher.audit import parse_when
from dispatcher.embedded import ManagedProcess, wait_until
from messages import AgentMessage
from messages.envelope import ID_MAX_LENGTH, NAME_MAX_LENGTH
from tests.helpers import chorus, with_db
from workers import keys
from workers.audit_store import AuditStore, events, tasks
from workers.auditor import Auditor, AuditorOptions, decode
from workers.state import StepRecord, TaskState


@pytest.fixture(scope="module")
def store(database_url: str, auditor: ManagedProcess) -> AuditStore:
    return AuditStore(database_url)


def audited(
    store: AuditStore, task_id: str, steps: int, timeout: float = 30
) -> list[dict[str, Any]]:
    """Wait until the auditor has written the task's final state and all its steps."""

    def landed() -> bool:
        info = store.task_info(task_id)
        done = info.get("status") in {"done", "failed", "needs_review", "rejected"}
        return done and len(store.step_records(task_id)) == steps

    wait_until(landed, timeout=timeout, what=f"audit rows of {task_id}")
    return store.query(task_id=task_id)


def test_every_message_and_transition_of_a_task_reaches_sql(
    dispatcher: Dispatcher, store: AuditStore
) -> None:
    handle = dispatcher.submit("Approve the audit rollout?", pattern="consensus", review_below=0)
    outcome = handle.wait(60)
    steps = handle.trace()
    rows = audited(store, handle.task_id, len(steps))

    kinds = [row["kind"] for row in rows]
    assert kinds[0] == "submitted"
    assert kinds.count("started") == kinds.count("step") == len(steps) == 4
    step_rows = [row for row in rows if row["kind"] == "step"]
    assert [r["agent"] for r in step_rows].count("analyst") == 3
    assert step_rows[-1]["agent"] == "judge"
    for row, step in zip(step_rows, steps, strict=True):
        assert row["message_id"] == step.message["message_id"]
        assert row["parent_message_id"] == step.message["parent_message_id"]
        assert row["model"] == step.model
        assert row["cost_micro_usd"] == step.cost_micro_usd > 0
        recorded = json.loads(row["detail"])
        assert recorded["input_message"] == step.input_message
        assert recorded["raw_output"] == step.raw_output
        assert recorded["summary"]
    assert sum(r["cost_micro_usd"] for r in step_rows) == outcome.cost_micro_usd
    info = store.task_info(handle.task_id)
    assert info["status"] == outcome.status
    assert json.loads(info["root_message"])["message_id"] == handle.messages()[0].message_id
    assert int(info["cost_micro_usd"]) == outcome.cost_micro_usd


def test_trace_and_status_still_work_from_sql_after_the_redis_state_expired(
    dispatcher: Dispatcher, store: AuditStore, stack_env: dict[str, str]
) -> None:
    handle = dispatcher.submit("Approve the archive plan?", pattern="consensus", review_below=0)
    handle.wait(60)
    audited(store, handle.task_id, len(handle.trace()))
    live = chorus(["trace", handle.task_id, "--json"], stack_env, timeout=30)
    assert live.returncode == 0, live.stderr

    client = redis.Redis.from_url(stack_env["CHORUS_REDIS_URL"])
    for key in (keys.task(handle.task_id), keys.board(handle.task_id), keys.trace(handle.task_id)):
        client.pexpire(key, 1)  # what CHORUS_STATE_TTL does, an hour sooner
    wait_until(lambda: not client.exists(keys.task(handle.task_id)), timeout=5, what="expiry")

    archived = chorus(["trace", handle.task_id, "--json"], stack_env, timeout=30)
    assert archived.returncode == 0, archived.stderr
    assert json.loads(archived.stdout) == json.loads(live.stdout)
    status = chorus(["status", handle.task_id], stack_env, timeout=30)
    assert status.returncode == 0, status.stderr
    assert f"task {handle.task_id}: done" in status.stdout


def test_chorus_audit_answers_what_one_agent_did_in_a_time_window(
    dispatcher: Dispatcher, store: AuditStore, stack_env: dict[str, str]
) -> None:
    before = datetime.now(UTC)
    handle = dispatcher.submit("Approve the window?", pattern="consensus", review_below=0)
    handle.wait(60)
    audited(store, handle.task_id, len(handle.trace()))
    after = datetime.now(UTC)

    def audit(*args: str) -> list[dict[str, Any]]:
        answer = chorus(["audit", "--json", *args], stack_env, timeout=30)
        assert answer.returncode == 0, answer.stderr
        return [json.loads(line) for line in answer.stdout.splitlines()]

    window = ["--since", before.isoformat(), "--until", after.isoformat()]
    judged = audit("--agent", "judge", *window)
    mine = [row for row in judged if row["task_id"] == handle.task_id]
    assert [row["kind"] for row in mine] == ["started", "step"]
    assert {row["agent"] for row in judged} == {"judge"}
    assert all(before <= datetime.fromisoformat(row["at"]) < after for row in judged)
    assert mine[1]["detail"]["message"]["payload"]["consensus"] in {"APPROVE", "REJECT", "SPLIT"}

    earlier = audit("--agent", "judge", "--since", "1h", "--until", before.isoformat())
    assert handle.task_id not in {row["task_id"] for row in earlier}
    assert all(datetime.fromisoformat(row["at"]) < before for row in earlier)

    text = chorus(["audit", "--task", handle.task_id], stack_env, timeout=30).stdout
    assert "step           analyst [ok]" in text
    assert text.rstrip().endswith("9 event(s)")  # submitted, then 4 started and 4 steps


def test_relative_and_local_times_are_understood() -> None:
    now = datetime(2026, 11, 24, 14, 32, tzinfo=UTC)
    assert parse_when("2h", now=now) == now - timedelta(hours=2)
    assert parse_when("2026-11-24T14:32:00+00:00") == now
    assert parse_when("2026-11-24T14:32").tzinfo is not None  # local time, made explicit


def fresh_stream(stack_env: dict[str, str], db: int) -> redis.Redis:
    """Another database of the test Redis: its audit stream is ours alone."""
    client = redis.Redis.from_url(with_db(stack_env, db)["CHORUS_REDIS_URL"])
    client.flushdb()
    return client


def record(task_id: str, number: int) -> StepRecord:
    message = {"message_id": f"out-{number}", "parent_message_id": f"in-{number}"}
    return StepRecord(
        task_id=task_id,
        input_message_id=f"in-{number}",
        agent="analyst",
        status="ok",
        message=message,
        usage={"input_tokens": 10, "output_tokens": 5},
        cost_micro_usd=7,
        finished_at="2026-11-24T14:32:00+00:00",
    )


def test_a_batch_an_auditor_died_on_is_claimed_by_another_and_written_once(
    stack_env: dict[str, str], tmp_path: Any
) -> None:
    client = fresh_stream(stack_env, 5)
    state = TaskState(client, ttl=60)
    state.submit("t-claim", pattern="consensus", root_message={"message_id": "root"})
    for number in range(20):
        state.record_step(record("t-claim", number), final_status=None)
    store = AuditStore(f"sqlite:///{tmp_path / 'claim.sqlite3'}")

    dying = Auditor(client, store, AuditorOptions(claim_idle=3600), consumer="dying")
    taken = client.xreadgroup(keys.AUDITORS, "dying", {keys.AUDIT: ">"}, count=100)
    assert len(taken[0][1]) == 21  # read, never written or acknowledged: the process died
    assert dying.drain() == 0
    assert store.count() == 0

    # Another auditor takes over entries idle longer than its claim_idle (0: at once).
    survivor = Auditor(client, store, AuditorOptions(claim_idle=0), consumer="survivor")
    assert survivor.drain() == 21
    assert store.count() == 21
    store.write([])  # and replaying a written batch changes nothing:
    for entry_id, fields in taken[0][1]:
        store.write([decode(entry_id, fields)])
    assert store.count() == 21
    assert client.xlen(keys.AUDIT) == 0  # written entries leave Redis
    assert sum(r["cost_micro_usd"] for r in store.query(task_id="t-claim")) == 20 * 7


def test_a_malformed_entry_is_set_apart_as_a_dead_letter_not_a_stuck_stream(
    stack_env: dict[str, str], tmp_path: Any
) -> None:
    client = fresh_stream(stack_env, 6)
    store = AuditStore(f"sqlite:///{tmp_path / 'bad.sqlite3'}")
    auditor = Auditor(client, store, consumer="one")
    client.xadd(keys.AUDIT, {"kind": "step", "task_id": "t-bad"})  # no time: cannot be placed
    TaskState(client, ttl=60).submit("t-good", pattern="route", root_message={})
    assert auditor.drain() == 2
    assert [row["task_id"] for row in store.query()] == ["t-good"]
    ((_, letter),) = client.xrange(keys.DEAD_LETTERS)
    assert (letter[b"code"], letter[b"task_id"]) == (b"audit_row", b"t-bad")
    assert json.loads(letter[b"body"]) == {"kind": "step", "task_id": "t-bad"}


def test_ids_of_the_longest_length_a_message_allows_fit_the_audit_columns(
    stack_env: dict[str, str], database_url: str
) -> None:
    """On PostgreSQL (CHORUS_TEST_DATABASE_URL) the column sizes are enforced."""
    client = fresh_stream(stack_env, 9)
    task_id, message_id = "t" * ID_MAX_LENGTH, "m" * ID_MAX_LENGTH
    AgentMessage.root(recipient="analyst", payload={}, task_id=task_id)  # a valid id
    state = TaskState(client, ttl=60)
    state.submit(task_id, pattern="route", root_message={})
    state.record_step(
        StepRecord(
            task_id=task_id,
            input_message_id=message_id,
            agent="a" * NAME_MAX_LENGTH,
            status="ok",
            message={"message_id": message_id, "parent_message_id": message_id},
            finished_at="2026-11-24T14:32:00+00:00",
        ),
        final_status="done",
    )
    store = AuditStore(database_url)
    assert Auditor(client, store, consumer="long-ids").drain() == 2
    rows = store.query(task_id=task_id)
    assert [row["kind"] for row in rows] == ["submitted", "step"]
    assert rows[1]["message_id"] == message_id
    assert store.task_info(task_id)["status"] == "done"
    assert not client.exists(keys.DEAD_LETTERS)


def test_a_row_sql_refuses_goes_to_a_dead_letter_and_its_batch_is_written(
    stack_env: dict[str, str], database_url: str
) -> None:
    client = fresh_stream(stack_env, 10)
    state = TaskState(client, ttl=60)
    state.submit("t-rows", pattern="consensus", root_message={"message_id": "root"})
    for number in range(3):
        state.record_step(record("t-rows", number), final_status=None)
    poison = {**record("t-rows", 9).__dict__, "cost_micro_usd": 2**70}  # fits no BIGINT
    at = "2026-11-24T14:32:00+00:00"
    client.xadd(
        keys.AUDIT, {"kind": "step", "task_id": "t-rows", "at": at, "record": json.dumps(poison)}
    )
    store = AuditStore(database_url)

    assert Auditor(client, store, consumer="rows").drain() == 5
    kinds = [row["kind"] for row in store.query(task_id="t-rows")]
    assert kinds == ["submitted", "step", "step", "step"]
    ((_, letter),) = client.xrange(keys.DEAD_LETTERS)
    assert (letter[b"code"], letter[b"agent"], letter[b"task_id"]) == (
        b"audit_row",
        b"auditor",
        b"t-rows",
    )
    assert b"could not be written to SQL" in letter[b"error"]
    assert json.loads(json.loads(letter[b"body"])["record"])["cost_micro_usd"] == 2**70
    assert client.xlen(keys.AUDIT) == 0  # nothing left pending: the batch is not stuck
    assert not [e for _, e in client.xrange(keys.AUDIT) if e[b"kind"] == b"dead_letter"]


def test_an_older_databases_short_id_columns_are_widened() -> None:
    """Tables an older Chorus created had 64-character ids; PostgreSQL enforces the size."""
    base = os.environ.get("CHORUS_TEST_DATABASE_URL", "")
    if not base.startswith("postgresql"):
        pytest.skip("SQLite does not enforce string lengths (CHORUS_TEST_DATABASE_URL for PG)")
    schema = f"chorus_widen_{os.getpid()}"
    engine = sa.create_engine(base)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        old = sa.MetaData()
        for table in (events, tasks):
            short = [sa.Column(c.name, sa.String(64) if c.name.endswith("_id") and
                               c.name != "event_id" and c.name != "last_event_id" else c.type)
                     for c in table.columns]  # fmt: skip
            sa.Table(table.name, old, *short)
        narrow = sa.create_engine(url)
        old.create_all(narrow)

        AuditStore(url).close()

        for table in (events, tasks):
            for column in sa.inspect(narrow).get_columns(table.name):
                if column["name"] in ("task_id", "message_id", "parent_message_id"):
                    assert column["type"].length == ID_MAX_LENGTH, (table.name, column)
        narrow.dispose()
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
