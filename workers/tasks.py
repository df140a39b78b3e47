"""One Celery task per agent of an app, each a thin shell around the shared runner.

A step that grows its workflow (a delegation, a revision round, a fan-out, a block that starts
from its hand-off) replaces itself with the canvas for it, inside the same Celery task id, so
the producer's one result resolves to the answer at the end of the grown workflow. A
redelivered step whose record exists does exactly what it did the first time: the messages it
causes have derived ids, so sending them again is harmless and never loses the hand-off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Ignore

from workers.canvas import continuation_canvas, planned_agents
from workers.flow import StepOptions, continuation_of
from workers.registry import AgentSpec

if TYPE_CHECKING:
    from workers.app import ChorusApp
    from workers.runtime import Runtime

RESULT_REPR_MAX = 200
"""Characters of a task's result that Celery's success log line shows."""

DEFER_AFTER = 5.0
"""A fleet-wide pause longer than this defers the task instead of sleeping in a worker slot."""


def register_agent_tasks(app: ChorusApp) -> None:
    for spec in app.team.agents.values():
        register_agent_task(app, spec)
    from workers.batcher import BatcherStep  # the fleet's batcher runs in every worker

    app.steps["worker"].add(BatcherStep)


def register_agent_task(app: ChorusApp, spec: AgentSpec) -> None:
    name = spec.name

    def agent_task(
        self: Task, received: object, message: object = None, options: object = None
    ) -> dict[str, Any]:
        spec = app.team.agents[name]  # as completed when the app loaded (a router's targets)
        runtime = app.runtime()
        paused = runtime.limiter.delay(spec.model_in(runtime.settings))
        if paused > DEFER_AFTER and _take_deferral(runtime, received, message):
            # The model is paused fleet-wide (a 429 asked for a long wait): give the slot back
            # to other queues and come back when the pause ends, rather than sleep in it. Each
            # deferral is one retry of the task's cap (CHORUS_TASK_MAX_RETRIES); past the cap
            # the step waits out the pause in its slot, so deferrals cannot go on for ever.
            raise self.retry(countdown=paused, max_retries=None)
        from workers.approvals import StepParked
        from workers.batching import BatchParked
        from workers.resume import park_task
        from workers.runner import Delivery, run_agent  # the model-calling side, on first use

        request = self.request
        info = request.delivery_info or {}
        delivery = Delivery(
            queue=info.get("routing_key"),
            worker=request.hostname,
            priority=info.get("priority"),
            in_chord=bool(request.chord),
        )
        try:
            outcome = run_agent(runtime, spec, received, delivery, message=message, options=options)
        except StepParked as parked:  # a tool call waits for a human: give the slot back
            park_task(self, runtime, parked)
        except BatchParked:  # a model call waits in a batch: the batcher resumes this task
            raise Ignore() from None
        plan = StepOptions.model_validate(options or {})
        step = continuation_of(outcome.input_message_id, outcome.message, plan)
        if step is not None:
            canvas = continuation_canvas(app, step, plan)
            runtime.state.plan(
                outcome.message.task_id, planned_agents(canvas), key=step.message.message_id
            )
            raise self.replace(canvas)
        return outcome.message.to_dict()

    agent_task.__name__ = f"agent_{spec.name}"
    agent_task.__doc__ = f"Agent {spec.name!r}: {spec.purpose}"
    # The worker logs each task's result; a short repr keeps payloads (possibly private) out
    # of the log and spares a repr of the whole message on every success.
    app.task(name=spec.task_name, bind=True, shared=False, resultrepr_maxsize=RESULT_REPR_MAX)(
        agent_task
    )


def _take_deferral(runtime: Runtime, received: object, message: object) -> bool:
    raw = message if isinstance(received, list) else received
    task_id = raw.get("task_id") if isinstance(raw, dict) else None
    if not isinstance(task_id, str):
        return False  # an undecodable message: the runner answers it at once
    return runtime.budget.take_retry(task_id, runtime.settings.task_max_retries)
