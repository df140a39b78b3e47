"""MCP servers' tools are listed when a worker starts, not at the first request: a server that
cannot start, or two tools with one name, show in the worker's log before any task needs them.

A worker bootstep: for each agent whose queue this worker consumes, connect its MCP servers
(one session per server per process, kept for the worker's life) and list their tools.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)


class ToolListingStep(bootsteps.StartStopStep):  # type: ignore[misc]
    def start(self, worker: Any) -> None:
        from workers.tool_loop import resolve_tools

        consumed = set(getattr(worker.app.amqp.queues, "consume_from", None) or {})
        for spec in worker.app.team.agents.values():
            if not spec.tools or (consumed and spec.queue not in consumed):
                continue
            if not any(hasattr(item, "connect") for item in spec.tools):
                continue
            try:
                names = sorted(resolve_tools(spec.tools))
            except Exception as exc:  # the step will report it as a tool error; say so now
                log.error("agent %s: its tools could not be listed: %s", spec.name, exc)
                continue
            log.info("agent %s: tools %s", spec.name, ", ".join(names))
