"""`chorus.App`: a team declared in a few lines, and the Celery app that runs it.

`App` is a Celery app (so `celery -A my_team worker -Q agent.scout` finds it), with the
declaration API on top: `agent`, `workflow`, `tool`. The team is checked when it loads
(`validate`), so a broken declaration fails at start-up with one error naming the fix, not
at the first request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from chorus.errors import AppDefinitionError
from messages.envelope import NAME_PATTERN
from workers.app import ChorusApp
from workers.blocks import Block, Workflow
from workers.registry import AgentSpec, Team
from workers.settings import Settings
from workers.tasks import register_agent_task
from workers.tools import Tool, tool_from_function

TIERS = ("fast", "strong")


class App(ChorusApp):
    """A team of agents and the workflows over them."""

    def __init__(self, name: str, *, settings: Settings | None = None) -> None:
        if not re.fullmatch(NAME_PATTERN, name):
            raise AppDefinitionError(
                f"app name {name!r} must be lower case letters, digits and _ (like a module)"
            )
        super().__init__(name, settings=settings, team=Team(name))
        self._validated = False

    # -- declaration ----------------------------------------------------------------------

    def agent(
        self,
        name: str,
        *,
        purpose: str,
        instructions: str,
        output: type[BaseModel],
        tier: str = "strong",
        model: str | None = None,
        max_tokens: int = 1024,
        tools: Sequence[Tool | Callable[..., Any] | Any] = (),
        max_turns: int = 8,
        batch: bool = False,
    ) -> AgentSpec:
        """Declare an agent: its own queue, its own workers, one structured answer per step.

        `tier` picks a configured model (`fast` for routing and critique, `strong` for heavy
        work); `model` names one directly. `output` is the pydantic model the answer must fit.
        """
        if not re.fullmatch(NAME_PATTERN, name):
            raise AppDefinitionError(
                f"agent name {name!r} must start with a lower case letter and hold only "
                "lower case letters, digits and _ (it names a queue and a Celery task)"
            )
        if name in self.team.agents:
            raise AppDefinitionError(f"agent {name!r} is declared twice in app {self.main!r}")
        if tier not in TIERS:
            raise AppDefinitionError(
                f"agent {name!r}: tier must be one of {', '.join(TIERS)}, or give model=..."
            )
        if not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise AppDefinitionError(
                f"agent {name!r}: output must be a pydantic model class, got {output!r}"
            )
        if not purpose.strip() or not instructions.strip():
            raise AppDefinitionError(f"agent {name!r}: purpose and instructions must not be empty")
        if max_tokens < 1 or max_turns < 1:
            raise AppDefinitionError(f"agent {name!r}: max_tokens and max_turns must be >= 1")
        spec = AgentSpec(
            name=name,
            purpose=purpose.strip(),
            system_prompt=instructions.strip(),
            tier=tier,  # type: ignore[arg-type]
            output_model=output,
            max_tokens=max_tokens,
            model=model,
            tools=tuple(self._as_tool(t) for t in tools),
            max_turns=max_turns,
            batch=batch,
        )
        self.add_agent(spec)
        return spec

    def add_agent(self, spec: AgentSpec) -> None:
        """Register a built spec (its queue and Celery task)."""
        self.team.agents[spec.name] = spec
        register_agent_task(self, spec)
        self._validated = False

    def workflow(self, name: str, block: Block | str, *, batch: bool = False) -> Workflow:
        """Declare a named workflow; the first one declared is the app's default."""
        from chorus.blocks import as_block

        if not re.fullmatch(NAME_PATTERN, name):
            raise AppDefinitionError(
                f"workflow name {name!r} must be lower case letters, digits and _"
            )
        if name in self.team.workflows:
            raise AppDefinitionError(f"workflow {name!r} is declared twice in app {self.main!r}")
        flow = Workflow(name, as_block(block), batch=batch)
        self.team.workflows[name] = flow
        if self.team.default_workflow is None:
            self.team.default_workflow = name
        self._validated = False
        return flow

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        requires_approval: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """A Python function as a tool: its schema from the type hints and the docstring."""

        def make(function: Callable[..., Any]) -> Tool:
            return tool_from_function(
                function, name=name, requires_approval=requires_approval, timeout=timeout
            )

        return make(fn) if fn is not None else make

    @staticmethod
    def _as_tool(value: Any) -> Any:
        if isinstance(value, Tool) or hasattr(value, "tools"):
            return value  # a Tool, or an MCP server whose tools are listed at worker start
        if callable(value):
            return tool_from_function(value)
        raise AppDefinitionError(f"not a tool: {value!r} (use @app.tool or an MCP server)")

    # -- checks ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Every check that would otherwise fail at the first request (chorus.validation)."""
        if self._validated:
            return
        from chorus.validation import validate_team

        validate_team(self)
        self._validated = True

    def using(self, settings: Settings) -> ChorusApp:
        self.validate()
        return super().using(settings)
