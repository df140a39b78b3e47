"""Agent specs and the team (an app's agents and workflows) that queues, workers, compose files
and manifests are checked against. No agent is named here: teams come from apps (`chorus`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from messages import ChorusError
from workers.blocks import Workflow
from workers.models import Tier

if TYPE_CHECKING:
    from workers.settings import Settings

PRIORITY_LEVELS = {"high": 0, "normal": 3, "low": 6}
"""Celery priority per RouteDecision priority. On Redis, 0 is served first; kombu keeps the
steps 0/3/6/9 as separate lists (`agent.x`, `agent.x\x06\x163`, ...)."""

QUEUE_PREFIX = "agent."
TASK_PREFIX = "chorus.agent."


@dataclass(frozen=True)
class AgentSpec:
    name: str
    purpose: str
    """One line; the router sees it when choosing a specialist."""
    system_prompt: str
    tier: Tier
    """Cheap `fast` tier for classification and critique, `strong` for heavy work."""
    output_model: type[BaseModel]
    """Sent to Claude as the structured-output schema and used to validate the answer."""
    max_tokens: int = 1024
    model: str | None = None
    """An explicit model id instead of the tier's (its price must be configured)."""
    tools: tuple[Any, ...] = ()
    """`workers.tools.Tool`s (and `workers.mcp_tools.MCPServer`s) the agent may call."""
    max_turns: int = 8
    """Model turns per step in a tool loop before the step ends `tool_limit`."""
    batch: bool = False
    """Every model call of this agent goes through the Message Batches API (half price)."""

    def model_in(self, settings: Settings) -> str:
        """The model id this agent calls under `settings` (its own, else its tier's)."""
        return self.model or settings.model_for(self.tier)

    @property
    def queue(self) -> str:
        return f"{QUEUE_PREFIX}{self.name}"

    @property
    def task_name(self) -> str:
        return f"{TASK_PREFIX}{self.name}"


@dataclass
class Team:
    """An app's agents and workflows: the one list queues, workers and deploy files follow."""

    name: str
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    default_workflow: str | None = None

    def agent(self, name: str) -> AgentSpec:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            raise UnknownAgentError(
                f"unknown agent {name!r} in app {self.name!r}; its agents: {known}"
            ) from None

    def workflow(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(self.workflows) or "none"
            raise ChorusError(
                f"unknown workflow {name!r} in app {self.name!r}; its workflows: {known}"
            ) from None


class UnknownAgentError(ChorusError, KeyError):
    """A name that is not one of the app's agents (a KeyError too, for mapping-style use)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _LoadedAgents(Mapping[str, AgentSpec]):
    """The agents of the app this process loaded (CHORUS_APP, else the seed team)."""

    def _agents(self) -> dict[str, AgentSpec]:
        from workers.loading import load_app

        return load_app().team.agents

    def __getitem__(self, name: str) -> AgentSpec:
        return self._agents()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._agents())

    def __len__(self) -> int:
        return len(self._agents())


AGENTS: Mapping[str, AgentSpec] = _LoadedAgents()


def get_agent(name: str) -> AgentSpec:
    """The loaded app's spec for `name`; the error names its agents so the fix is obvious."""
    from workers.loading import load_app

    return load_app().team.agent(name)
