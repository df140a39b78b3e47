"""kill -9 during a batched run: the batcher's process (the worker whose batcher leads) while a
batch is in flight, then another worker while steps resume. Every task ends, no request is
submitted twice (the simulator's batches and ledger), none is lost (nothing is left waiting),
and each task's cost is what the ledger billed.

`make test` runs CHORUS_CHAOS_TASKS (default 6) tasks; `make chaos` sets CHORUS_CHAOS_FULL=1
and CHORUS_CHAOS_TASKS=100.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest

from dispatcher.embedded import wait_until
from tests.batch_fleet import BatchFleet, batch_fleet, billed_micro_usd
from workers import keys

FULL = os.environ.get("CHORUS_CHAOS_FULL") == "1"
TASKS = int(os.environ.get("CHORUS_CHAOS_TASKS", "100" if FULL else "6"))
ENDED = {"done", "needs_review", "failed"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchFleet]:
    env = {"CHORUS_VISIBILITY_TIMEOUT": "10", "CHORUS_BATCH_MAX_REQUESTS": "8"}
    with batch_fleet(
        tmp_path_factory.mktemp("batch-chaos"), workers=2, batch_delay=0.5, env=env
    ) as running:
        yield running


def test_kill_9_of_the_batcher_and_of_a_worker_loses_no_request_and_sends_none_twice(
    fleet: BatchFleet,
) -> None:
    dispatcher = fleet.dispatcher()
    client = fleet.client()
    fleet.control("/_sim/ledger", "DELETE")
    handles = [
        dispatcher.submit(
            f"Assess the rollout plan number {i} for the billing service",
            workflow="pipeline" if i % 2 == 0 else "consensus",
            batch=True,
        )
        for i in range(TASKS)
    ]

    wait_until(lambda: client.hlen(keys.BATCHES) > 0, timeout=60, what="a batch in flight")
    leader = fleet.kill_leader()
    assert leader is not None, "no batcher led while a batch was in flight"
    fleet.start_worker()

    def some_resumed() -> bool:
        ended = sum(1 for h in handles if h.status().get("status") in ENDED)
        return ended >= max(1, TASKS // 3) or ended == TASKS

    wait_until(some_resumed, timeout=120, what="tasks to finish after the takeover")
    others = [w for w in fleet.workers if w.alive() and w.process.pid != fleet.leader_pid()]
    if others:
        others[0].process.kill()
        others[0].process.wait(10)
    fleet.start_worker()

    outcomes = [handle.wait(300) for handle in handles]
    assert {o.status for o in outcomes} <= ENDED
    assert not [o for o in outcomes if o.status == "failed"], [
        o.message.payload for o in outcomes if o.status == "failed"
    ]

    # 0 submitted twice: each custom_id billed once and in exactly one batch.
    calls = fleet.ledger()["calls"]
    billed = Counter(call["custom_id"] for call in calls)
    assert billed
    assert max(billed.values()) == 1, [cid for cid, n in billed.items() if n > 1]
    assert all(call["batch"] for call in calls)
    sent = sum(sum(b["request_counts"].values()) for b in fleet.batches())
    assert sent == len(billed)

    # 0 lost: nothing waits anywhere, every batched call of every step was billed.
    for key in (keys.BATCH_REQUESTS, keys.BATCHES, keys.BATCH_OUTBOX):
        assert client.hlen(key) == 0, key
    assert not any(client.zcard(k) for k in client.scan_iter(match=keys.batch_pending("*")))
    for handle, outcome in zip(handles, outcomes, strict=True):
        marked = {c["custom_id"] for s in handle.trace() for c in s.batched_calls}
        assert marked <= set(billed)
        assert outcome.cost_micro_usd == billed_micro_usd(fleet.ledger(handle.task_id))
