"""Parking an agent's Celery task while a tool call waits for a human, and resuming it.

The parked task ends without a result (`Ignore`: acknowledged, no state stored), so it holds
no worker slot and the producer's `wait()` keeps waiting on the same task id. What resumes it
is the task itself: its signature from the request (`Task.signature_from_request`, as
`Task.retry` builds it) with the same task id, chain, chord, callbacks and queue, stored with
the review and published again on the decision. Any worker of the agent's queue takes it; the
step's journal makes it go on from the parked turn, and the workflow continues from there
exactly as if the step had never stopped.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Ignore

from workers.approvals import Approvals, PendingApproval, StepParked
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def approvals(runtime: Runtime) -> Approvals:
    """The process's approvals, on its runtime's Redis."""
    return Approvals(runtime.redis, runtime.state.audit, runtime.settings.state_ttl)


def park_task(task: Task, runtime: Runtime, parked: StepParked) -> NoReturn:
    """Store the step's pending calls with what resumes it, open the review, end the task.

    Call from the agent's task: `except StepParked as parked: park_task(self, runtime, parked)`.
    """
    signature: dict[str, Any] = json.loads(json.dumps(task.signature_from_request()))
    if approvals(runtime).park(parked, resume=signature):
        log.info("%s; review %s opened", parked, parked.review_id)
    raise Ignore()


def resume(app: Celery, pending: PendingApproval) -> str | None:
    """Publish the parked task again (same id, chain and chord); its Celery task id, or None
    for a step parked without a task to resume (run in-process)."""
    if not pending.resume:
        return None
    result = app.signature(pending.resume).apply_async()
    return str(result.id)
