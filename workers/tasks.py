"""One Celery task per agent, each a thin shell around the shared runner, plus the signatures
that put a message on an agent's queue."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from celery import Task, chain, chord, group
from celery.canvas import _chain
from celery.exceptions import Ignore

from messages import AgentMessage, MessageType, TaskRequest
from workers.flow import Continuation, StepOptions
from workers.registry import AGENTS, PRIORITY_LEVELS, AgentSpec, get_agent
from workers.runner import Delivery, run_agent

if TYPE_CHECKING:
    from workers.app import ChorusApp


def register_agent_tasks(app: ChorusApp) -> None:
    for spec in AGENTS.values():
        _register(app, spec)


def agent_signature(
    app: ChorusApp,
    message: AgentMessage | None,
    options: StepOptions | None = None,
    *,
    agent: str | None = None,
    priority: int | None = None,
) -> Any:
    """The signature that delivers `message` to its recipient's queue.

    With `message=None` the step takes its input from the previous step of a chain.
    """
    spec = get_agent(agent or (message.recipient if message else ""))
    args = () if message is None else (message.to_dict(),)
    extra: dict[str, Any] = {"queue": spec.queue, **_reprs(message, options)}
    if priority is not None:
        extra["priority"] = priority
    kwargs = {"options": (options or StepOptions()).model_dump()}
    return app.signature(spec.task_name, args=args, kwargs=kwargs, **extra)


def aggregate_signature(app: ChorusApp, message: AgentMessage, options: StepOptions) -> Any:
    """A chord body: the branch answers arrive as its first argument, `message` beside them."""
    spec = get_agent(message.recipient)
    kwargs = {"message": message.to_dict(), "options": options.model_dump()}
    return app.signature(
        spec.task_name, kwargs=kwargs, queue=spec.queue, **_reprs(message, options)
    )


def _reprs(message: AgentMessage | None, options: StepOptions | None) -> dict[str, str]:
    """What Flower and logs show for a task: ids, not payloads (short, and nothing private).

    It also spares Celery a `saferepr` of every payload on every publish.
    """
    shown = "<previous step's answer>"
    if message is not None:
        shown = f"<AgentMessage {message.message_id} task {message.task_id} to {message.recipient}>"
    pattern = options.pattern if options else "route"
    return {"argsrepr": f"({shown},)", "kwargsrepr": f"{{pattern: {pattern}}}"}


def branch_signatures(
    app: ChorusApp,
    parent: AgentMessage,
    agent: str,
    branches: list[tuple[str, str]],
    pattern: str,
) -> list[Any]:
    """One task per (name, instructions), each a child of `parent`, none final."""
    request = TaskRequest.model_validate(parent.payload)
    signatures = []
    for name, instructions in branches:
        payload = TaskRequest(
            text=request.text, instructions=instructions, context={"branch": name}
        )
        branch = parent.child(sender=parent.sender, recipient=agent, payload=payload.model_dump())
        signatures.append(agent_signature(app, branch, StepOptions(pattern=pattern, final=False)))
    return signatures


def continuation_signature(app: ChorusApp, step: Continuation, plan: StepOptions) -> Any:
    """The canvas a step replaces itself with when the workflow grows at run time."""
    if step.kind == "delegate":
        priority = PRIORITY_LEVELS.get(step.priority or "")
        return agent_signature(app, step.message, plan, priority=priority)
    later = step.options or plan
    if step.kind == "revise":
        drafting = later.model_copy(update={"forward_to": "critic", "final": False})
        return chain(
            agent_signature(app, step.message, drafting),
            agent_signature(app, None, later, agent="critic"),
        )
    names = _labels([subtask.name for subtask in step.subtasks])
    header = branch_signatures(
        app,
        step.message,
        "research",
        [(name, s.instructions) for name, s in zip(names, step.subtasks, strict=True)],
        later.pattern,
    )
    body_options = later.model_copy(update={"branches": names, "quorum": 1})
    return chord(group(header), aggregate_signature(app, step.message, body_options))


def planned_agents(canvas: Any) -> dict[str, int]:
    """How many steps of each agent a canvas will run (chains, groups, chords, signatures)."""
    counts: dict[str, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, chord):
            walk(node.tasks)
            walk(node.body)
        elif isinstance(node, _chain | group):
            for task in node.tasks:
                walk(task)
        elif isinstance(node, list | tuple):
            for task in node:
                walk(task)
        elif node is not None:
            name = str(getattr(node, "task", "")).removeprefix("chorus.agent.")
            counts[name] = counts.get(name, 0) + 1

    walk(canvas)
    return counts


def _labels(names: list[str]) -> list[str]:
    """Model-chosen names made safe and unique, so branches stay distinguishable."""
    labels: list[str] = []
    for index, name in enumerate(names, 1):
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "subtask"
        labels.append(f"{index}_{slug}")
    return labels


def _replay_handoff(task: Task, app: ChorusApp, handoff: AgentMessage, options: object) -> None:
    """A redelivered step had already handed the work on (a worker died before its ack).

    Storing the hand-off as this task's result would answer the producer with a half-done
    task. If the next agent has the message, stay silent; if the hand-off never left (the
    worker died between recording and publishing), send it again, same message id.
    """
    state = app.runtime().state
    if state.was_started(handoff.task_id, handoff.message_id):
        raise Ignore()
    route = handoff.payload.get("context", {}).get("route", {})
    if handoff.sender == "router" and isinstance(route, dict):
        plan = StepOptions.model_validate(options or {})
        priority = PRIORITY_LEVELS.get(str(route.get("priority", "")))
        raise task.replace(agent_signature(app, handoff, plan, priority=priority))
    # Revision rounds and fan-outs rebuild their canvas from the live step only; the chaos
    # suite reports it if this window (record written, hand-off unsent) is ever hit.
    raise Ignore()


RESULT_REPR_MAX = 200
"""Characters of a task's result that Celery's success log line shows."""

DEFER_AFTER = 5.0
"""A fleet-wide pause longer than this defers the task instead of sleeping in a worker slot."""


def _register(app: ChorusApp, spec: AgentSpec) -> None:
    def agent_task(
        self: Task, received: object, message: object = None, options: object = None
    ) -> dict[str, Any]:
        runtime = app.runtime()
        paused = runtime.limiter.delay(runtime.settings.model_for(spec.tier))
        if paused > DEFER_AFTER:
            # The model is paused fleet-wide (a 429 asked for a long wait): give the slot back
            # to other queues and come back when the pause ends, rather than sleep in it.
            raise self.retry(countdown=paused, max_retries=None)
        request = self.request
        info = request.delivery_info or {}
        delivery = Delivery(
            queue=info.get("routing_key"),
            worker=request.hostname,
            priority=info.get("priority"),
            in_chord=bool(request.chord),
        )
        outcome = run_agent(
            app.runtime(), spec, received, delivery, message=message, options=options
        )
        if outcome.replayed and outcome.message.message_type is MessageType.TASK:
            _replay_handoff(self, app, outcome.message, options)
        if outcome.continuation is not None:
            # Continue inside the same Celery task id, so the producer's one result resolves
            # to the answer at the end of the grown workflow.
            plan = StepOptions.model_validate(options or {})
            canvas = continuation_signature(app, outcome.continuation, plan)
            app.runtime().state.plan(outcome.message.task_id, planned_agents(canvas))
            raise self.replace(canvas)
        return outcome.message.to_dict()

    agent_task.__name__ = f"agent_{spec.name}"
    agent_task.__doc__ = f"Agent {spec.name!r}: {spec.purpose}"
    # The worker logs each task's result; a short repr keeps payloads (possibly private) out
    # of the log and spares a repr of the whole message on every success.
    app.task(name=spec.task_name, bind=True, shared=False, resultrepr_maxsize=RESULT_REPR_MAX)(
        agent_task
    )
