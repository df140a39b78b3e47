"""The checks an app passes when it loads, each failing with one error that names the fix:
unknown agents in a workflow, a model without a price, an output model the structured-output
API cannot take, and agents whose answers do not fit the role their block gives them.

Routers are completed here: a route's router gets the RouteDecision narrowed to its targets
and a prompt that lists them (declared for the user when they did not declare one).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from chorus.errors import AppDefinitionError
from messages import RouteDecision
from workers.blocks import (
    Block,
    Consensus,
    Evaluate,
    Fanout,
    Orchestrate,
    Pipeline,
    Route,
    agents_of,
)
from workers.registry import AgentSpec

if TYPE_CHECKING:
    from chorus.app import App

ROUTER_INSTRUCTIONS = (
    "You are a dispatcher. Classify the request and choose exactly one specialist agent to "
    "handle it, with a priority and a one-sentence reason."
)


def validate_team(app: App) -> None:
    team = app.team
    if not team.workflows and not team.agents:
        raise AppDefinitionError(f"app {app.main!r} declares no agents: add app.agent(...)")
    routes = [b for flow in team.workflows.values() for b in _blocks(flow.block)]
    _complete_routers(app, [b for b in routes if isinstance(b, Route)])
    for flow in team.workflows.values():
        unknown = [name for name in agents_of(flow.block) if name not in team.agents]
        if unknown:
            raise AppDefinitionError(
                f"workflow {flow.name!r} uses undeclared agent(s) {', '.join(unknown)}: declare "
                f"each with app.agent({unknown[0]!r}, purpose=..., instructions=..., output=...)"
            )
    for block in routes:
        _check_roles(app, block)
    prices = app.settings.prices
    for spec in team.agents.values():
        model = spec.model_in(app.settings)
        if model not in prices:
            raise AppDefinitionError(
                f"agent {spec.name!r} calls model {model!r}, which has no price: add it to "
                "[prices] in the CHORUS_CONFIG file (micro-dollars per million tokens), or "
                "pick a tier or model that has one"
            )
        _check_schema(spec)


def _blocks(block: Block) -> list[Block]:
    found = [block]
    if isinstance(block, Pipeline):
        for step in block.steps:
            found.extend(_blocks(step))
    elif isinstance(block, Fanout):
        for branch in block.branches:
            found.extend(_blocks(branch.block))
    return found


def _complete_routers(app: App, routes: list[Route]) -> None:
    targets_of: dict[str, tuple[str, ...]] = {}
    for block in routes:
        seen = targets_of.setdefault(block.router, block.targets)
        if seen != block.targets:
            raise AppDefinitionError(
                f"router {block.router!r} routes to different targets in two workflows: give "
                "each route its own router, route([...], router='other_router')"
            )
    for router, targets in targets_of.items():
        missing = [t for t in targets if t not in app.team.agents]
        if missing:
            raise AppDefinitionError(
                f"route targets {', '.join(missing)} are not declared agents: declare them "
                "with app.agent(...)"
            )
        lines = "\n".join(f"- {t}: {app.team.agents[t].purpose}" for t in targets)
        existing = app.team.agents.get(router)
        base = existing.system_prompt if existing else ROUTER_INSTRUCTIONS
        base = base.split("\nSpecialists:\n", 1)[0]
        spec = AgentSpec(
            name=router,
            purpose=existing.purpose if existing else "Classifies a request and delegates it.",
            system_prompt=f"{base}\nSpecialists:\n{lines}",
            tier=existing.tier if existing else "fast",
            output_model=route_decision_model(targets),
            max_tokens=existing.max_tokens if existing else 512,
            model=existing.model if existing else None,
        )
        if existing is None:
            app.add_agent(spec)
        else:
            app.team.agents[router] = replace(
                existing, system_prompt=spec.system_prompt, output_model=spec.output_model
            )


def route_decision_model(targets: tuple[str, ...]) -> type[RouteDecision]:
    """RouteDecision narrowed to the route's targets, so the schema itself forbids others."""
    agent_type = Literal[targets]  # type: ignore[valid-type]
    model: type[RouteDecision] = create_model(
        "RouteDecision", __base__=RouteDecision, agent=(agent_type, ...)
    )
    return model


def _check_roles(app: App, block: Block) -> None:
    agents = app.team.agents
    if isinstance(block, Consensus):
        _needs(agents[block.agent], "consensus analyst", verdict="APPROVE", confidence=0.5)
        _needs(agents[block.judge], "consensus judge", consensus="SPLIT", confidence=0.5)
    elif isinstance(block, Evaluate):
        _needs(agents[block.critic], "evaluate critic", verdict="pass")
        _needs(agents[block.critic], "evaluate critic", verdict="revise")
    elif isinstance(block, Orchestrate):
        subtask = {"name": "part", "instructions": "do it"}
        _needs(agents[block.planner], "orchestrate planner", subtasks=[subtask])


def _needs(spec: AgentSpec, role: str, **samples: Any) -> None:
    """The agent's output model has each field, and the field accepts the sample value."""
    fields = spec.output_model.model_fields
    for name, sample in samples.items():
        field = fields.get(name)
        problem = f"has no field {name!r}" if field is None else ""
        if field is not None and field.annotation is not None:
            try:
                TypeAdapter(field.annotation).validate_python(sample)
            except ValidationError:
                problem = f"has a field {name!r} that does not accept {sample!r}"
        if problem:
            raise AppDefinitionError(
                f"agent {spec.name!r} is a {role}, but its output {spec.output_model.__name__} "
                f"{problem}: subclass the matching base model ({_base_for(role)}) or add the "
                "field"
            )


def _base_for(role: str) -> str:
    return {
        "consensus analyst": "chorus.Verdict",
        "consensus judge": "chorus.Judgement",
        "evaluate critic": "chorus.Critique",
        "orchestrate planner": "chorus.Plan",
    }[role]


def _check_schema(spec: AgentSpec) -> None:
    """What the structured-output API refuses, found before any call."""
    model: type[BaseModel] = spec.output_model
    try:
        schema = model.model_json_schema()
    except Exception as exc:
        raise AppDefinitionError(
            f"agent {spec.name!r}: output {model.__name__} has no JSON schema ({exc}); use "
            "JSON-compatible field types"
        ) from None
    if schema.get("type") != "object":
        raise AppDefinitionError(
            f"agent {spec.name!r}: output {model.__name__} must be an object with fields"
        )
    _no_free_form(spec, schema, model.__name__)


def _no_free_form(spec: AgentSpec, node: Any, where: str) -> None:
    """Structured outputs need every object's properties named (additionalProperties false)."""
    if isinstance(node, dict):
        extra = node.get("additionalProperties")
        if node.get("type") == "object" and isinstance(extra, dict) and extra:
            raise AppDefinitionError(
                f"agent {spec.name!r}: output {where} has a free-form mapping (dict[str, ...]); "
                "structured outputs need named fields: use a model, or a list of key/value "
                "models"
            )
        for value in node.values():
            _no_free_form(spec, value, where)
    elif isinstance(node, list):
        for value in node:
            _no_free_form(spec, value, where)
