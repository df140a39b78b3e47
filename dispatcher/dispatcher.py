"""The producer API: `Dispatcher.submit(text)` returns a handle to wait on and inspect."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from dispatcher import patterns
from dispatcher.handle import (
    Reader,
    TaskHandle,
    TaskOutcome,
    TaskTimeoutError,
    lineage_order,
)
from messages import AgentMessage, ChorusError, TaskRequest
from messages.payloads import MAX_TEXT
from messages.status import FINISHED
from workers import redis_urls, telemetry
from workers.app import ChorusApp, create_app
from workers.blocks import Block, Step, agents_of, entry_agent
from workers.canvas import Place, build, planned_agents
from workers.documents import Document, store_documents
from workers.registry import PRIORITY_LEVELS
from workers.transport import ahead_of_publish

__all__ = [
    "FINISHED",
    "BrokerUnavailableError",
    "Dispatcher",
    "NoWorkerError",
    "TaskHandle",
    "TaskOutcome",
    "TaskTimeoutError",
    "lineage_order",
]


class NoWorkerError(ChorusError):
    """No worker consumes a queue the request needs; the message says how to start one."""

    def __init__(self, missing: list[str], app: str = "chorus") -> None:
        self.missing = missing
        agents = " ".join(q.removeprefix("agent.") for q in missing)
        module = "" if app == "chorus" else " -A <your app module>"
        super().__init__(
            f"no worker is consuming {', '.join(missing)}. Start one with "
            f"`chorus{module} worker {agents}` (or `celery{module or ' -A workers.app'} worker "
            f"-Q {','.join(missing)}`), or run with --embedded to start Redis, workers and the "
            "simulator for this run."
        )


class BrokerUnavailableError(ChorusError):
    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(
            f"cannot reach Redis at {_redact(url)} ({type(cause).__name__}). Start redis-server, "
            "set CHORUS_REDIS_URL, or run with --embedded."
        )


class Dispatcher(Reader):
    """Submits requests as Celery workflows over the per-agent queues of an app."""

    def __init__(self, app: ChorusApp | None = None) -> None:
        self.app = app or create_app()
        self.app.validate()
        super().__init__(self.app.settings, self.app.runtime().state)

    def submit(
        self,
        text: str,
        *,
        workflow: str | None = None,
        agent: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        documents: Sequence[Document] = (),
        priority: str = "normal",
        batch: bool | None = None,
        check_workers: bool = False,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        pattern: str | None = None,
        **options: Any,
    ) -> TaskHandle:
        """Run `text` through one of the app's workflows (default: its first), or one agent.

        `inputs` (JSON) reach every step as context; `documents` are stored once on the
        blackboard and every step reads them by id. `budget_usd` and `budget_tokens` are
        hard limits for the whole task (defaults: CHORUS_TASK_BUDGET_USD / _TOKENS): a call
        whose worst case does not fit is not made and the task ends `budget_exceeded`.
        `options` tune the workflow's block per request (dispatcher.patterns.OPTIONS).
        `pattern` is the older name of `workflow`.
        """
        if workflow is not None and pattern is not None and workflow != pattern:
            raise ChorusError("give workflow or pattern (its older name), not both")
        name, block, flow_batch = resolve(self.app, workflow or pattern, agent, options)
        if priority not in PRIORITY_LEVELS:
            raise ChorusError(f"priority must be one of {', '.join(PRIORITY_LEVELS)}")
        request = request_for(text, inputs)
        if check_workers:
            self.require_workers(agents_of(block))
        settings = self.app.settings
        usd = settings.task_budget_usd if budget_usd is None else budget_usd
        tokens = settings.task_budget_tokens if budget_tokens is None else budget_tokens
        if usd < 0 or tokens < 0:
            raise ChorusError("budget_usd and budget_tokens must not be negative")
        root = AgentMessage.root(recipient=entry_agent(block), payload=request.model_dump())
        refs = store_documents(self.state.redis, root.task_id, documents, settings.state_ttl)
        if refs:
            request.context["documents"] = refs
            root = root.model_copy(update={"payload": request.model_dump()})
        place = Place(
            workflow=name,
            priority=PRIORITY_LEVELS[priority],
            batch=flow_batch if batch is None else batch,
        )
        canvas = build(self.app, block, root, place)
        task_hash = self.state.submit_commands(
            root.task_id,
            pattern=name,
            root_message=root.to_dict(),
            budget_tokens=tokens,
            budget_micro_usd=round(usd * 1_000_000),
            planned=planned_agents(canvas),
        )
        # One Redis pipeline for the task hash and every message of the canvas (kombu 5.7
        # publish batches): a 50-way fan-out leaves in one round trip instead of fifty-one, and
        # the hash is written before any worker can take a message.
        with (
            telemetry.submit_span(root.task_id, name, message_id=root.message_id),
            self.app.producer_or_acquire() as producer,
            producer.batch(),
            ahead_of_publish(task_hash) as unsent,
        ):
            canvas.apply_async(task_id=root.task_id, producer=producer)
        if unsent:  # nothing went through the Redis channel (another transport)
            self.state.execute(unsent)
        return TaskHandle(self, root.task_id, fresh=True)

    def ping_broker(self) -> None:
        url = self.app.settings.redis_url
        settings = self.app.settings
        try:
            redis_urls.client(
                url,
                master=settings.sentinel_master,
                sentinel_password=settings.sentinel_password,
                socket_connect_timeout=2,
                socket_timeout=2,
            ).ping()
        except (redis.RedisError, redis_urls.RedisURLError) as exc:
            raise BrokerUnavailableError(url, exc) from None

    def consumed_queues(self, timeout: float = 1.0) -> set[str]:
        replies = self.app.control.inspect(timeout=timeout).active_queues() or {}
        return {queue["name"] for queues in replies.values() for queue in queues}

    def agents_for(self, workflow: str | None = None, agent: str | None = None) -> list[str]:
        return workflow_agents(self.app, workflow, agent)

    def require_workers(self, agents: list[str], timeout: float = 1.0) -> None:
        self.ping_broker()
        needed = [self.app.team.agent(name).queue for name in agents]
        consumed = self.consumed_queues(timeout)
        missing = [queue for queue in needed if queue not in consumed]
        if missing:
            raise NoWorkerError(missing, self.app.main)


def resolve(
    app: ChorusApp, workflow: str | None, agent: str | None, options: Mapping[str, Any]
) -> tuple[str, Block, bool]:
    """The workflow's name, its block with per-request `options` applied, and whether it is
    batched; or one agent alone. Refused before anything is sent or started."""
    team = app.team
    if agent is not None:
        if workflow is not None:
            raise ChorusError("give a workflow or an agent, not both")
        if options:
            raise ChorusError(f"option(s) {', '.join(options)} apply to workflows, not agents")
        team.agent(agent)
        return agent, Step(agent), False
    name = workflow or team.default_workflow
    if name is None:
        raise ChorusError(
            f"app {team.name!r} declares no workflow: add app.workflow(...) or pass agent=NAME"
        )
    flow = team.workflow(name)
    return name, patterns.customise(flow.block, **options), flow.batch


def workflow_agents(
    app: ChorusApp, workflow: str | None = None, agent: str | None = None
) -> list[str]:
    """Agents whose queues a workflow may need (a router's targets included)."""
    if agent is not None:
        return [app.team.agent(agent).name]
    name = workflow or app.team.default_workflow or ""
    return agents_of(app.team.workflow(name).block)


def request_for(text: str, inputs: Mapping[str, Any] | None) -> TaskRequest:
    """The root request, refused (one clear line) when empty, oversized or not JSON."""
    if not isinstance(text, str) or not text.strip():
        raise ChorusError("the request text is empty: give the task something to do")
    if len(text) > MAX_TEXT:
        raise ChorusError(
            f"the request text has {len(text)} characters, over the limit of {MAX_TEXT}: "
            "pass large material as documents=[...]"
        )
    context: dict[str, Any] = {}
    if inputs:
        try:
            context["inputs"] = json.loads(json.dumps(dict(inputs)))
        except (TypeError, ValueError) as exc:
            raise ChorusError(f"inputs must be JSON-serialisable: {exc}") from None
    return TaskRequest(text=text, context=context)


def _redact(url: str) -> str:
    """Hide a password in a redis:// URL before it reaches a terminal or a log."""
    if "@" not in url or "//" not in url:
        return url
    scheme, rest = url.split("//", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}//{user + ':***' if ':' in credentials else '***'}@{host}"
