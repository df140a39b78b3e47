"""One Celery task per agent, each a thin shell around the shared runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Task

from messages import AgentMessage
from workers.registry import AGENTS, PRIORITY_LEVELS, AgentSpec, get_agent
from workers.runner import Delivery, run_agent

if TYPE_CHECKING:
    from workers.app import ChorusApp


def register_agent_tasks(app: ChorusApp) -> None:
    for spec in AGENTS.values():
        _register(app, spec)


def agent_signature(
    app: ChorusApp, message: AgentMessage, *, final: bool = True, priority: int | None = None
) -> Any:
    """The Celery signature that delivers `message` to its recipient's queue."""
    spec = get_agent(message.recipient)
    options: dict[str, Any] = {"queue": spec.queue}
    if priority is not None:
        options["priority"] = priority
    return app.signature(
        spec.task_name, args=(message.to_dict(),), kwargs={"final": final}, **options
    )


def _register(app: ChorusApp, spec: AgentSpec) -> None:
    def agent_task(self: Task, message: object, final: bool = True) -> dict[str, Any]:
        request = self.request
        info = request.delivery_info or {}
        delivery = Delivery(
            queue=info.get("routing_key"),
            worker=request.hostname,
            priority=info.get("priority"),
            in_chord=bool(request.chord),
        )
        outcome = run_agent(app.runtime(), spec, message, delivery, final=final)
        target = outcome.delegate_to
        if target is not None:
            # Continue inside the same Celery task id, so the producer's result resolves to
            # the specialist's answer.
            route = outcome.message.payload.get("context", {}).get("route", {})
            priority = PRIORITY_LEVELS.get(str(route.get("priority")))
            signature = agent_signature(app, outcome.message, final=final, priority=priority)
            raise self.replace(signature)
        return outcome.message.to_dict()

    agent_task.__name__ = f"agent_{spec.name}"
    agent_task.__doc__ = f"Agent {spec.name!r}: {spec.purpose}"
    app.task(name=spec.task_name, bind=True, shared=False)(agent_task)
