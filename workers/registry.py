"""The agent registry: the one list of agents that queues, workers, compose files and manifests
are checked against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, create_model

from messages import (
    CodeReview,
    Critique,
    Draft,
    Judgement,
    MergedAnalysis,
    Plan,
    ResearchFindings,
    RouteDecision,
    Summary,
    Synthesis,
    Verdict,
)
from workers.models import Tier

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

    @property
    def queue(self) -> str:
        return f"{QUEUE_PREFIX}{self.name}"

    @property
    def task_name(self) -> str:
        return f"{TASK_PREFIX}{self.name}"


ROUTER_TARGETS: tuple[str, ...] = ("research", "code_review", "summarizer", "critic")
"""Specialists the router may delegate to."""

_SPECIALISTS = (
    AgentSpec(
        name="research",
        purpose="Investigates a question and reports findings with open questions.",
        system_prompt=(
            "You are a careful research analyst. Answer the request with verifiable findings, "
            "separate facts from judgement, and list what remains uncertain."
        ),
        tier="strong",
        output_model=ResearchFindings,
        max_tokens=2048,
    ),
    AgentSpec(
        name="code_review",
        purpose="Reviews source code for defects, risks and improvements.",
        system_prompt=(
            "You are a senior code reviewer. Point at concrete defects with their location and "
            "impact, then suggest improvements. Do not praise without reason."
        ),
        tier="strong",
        output_model=CodeReview,
        max_tokens=2048,
    ),
    AgentSpec(
        name="summarizer",
        purpose="Summarizes or condenses text, explanations and trade-offs.",
        system_prompt=(
            "You summarize faithfully: keep every important claim, add nothing that is not in "
            "the request, and prefer short plain sentences."
        ),
        tier="strong",
        output_model=Summary,
    ),
    AgentSpec(
        name="critic",
        purpose="Critiques a draft or plan and says whether it passes or needs revision.",
        system_prompt=(
            "You are a demanding critic. Judge the work against the request, name strengths and "
            "weaknesses, and answer pass only when nothing important is missing."
        ),
        tier="fast",
        output_model=Critique,
    ),
)


_WORKFLOW_AGENTS = (
    AgentSpec(
        name="drafter",
        purpose="Writes (and revises) a draft from the request and earlier findings.",
        system_prompt=(
            "You write clear, well-structured drafts. Use the findings given as context, keep "
            "every claim traceable to them, and when a critique is given, fix what it names."
        ),
        tier="strong",
        output_model=Draft,
        max_tokens=4096,
    ),
    AgentSpec(
        name="merger",
        purpose="Reconciles parallel analyses, reporting contradictions instead of hiding them.",
        system_prompt=(
            "You merge analyses written independently. Never invent agreement: when two "
            "analyses disagree, list the contradiction and name both sides. Name any branch "
            "that failed or left a question open."
        ),
        tier="strong",
        output_model=MergedAnalysis,
        max_tokens=2048,
    ),
    AgentSpec(
        name="analyst",
        purpose="Assesses a proposal independently and votes APPROVE, REJECT or UNCERTAIN.",
        system_prompt=(
            "You assess the proposal on your own, from the perspective you are given. Vote "
            "APPROVE, REJECT or UNCERTAIN, with your confidence and concrete reasons."
        ),
        tier="strong",
        output_model=Verdict,
    ),
    AgentSpec(
        name="judge",
        purpose="Weighs independent verdicts and states the consensus, or that there is none.",
        system_prompt=(
            "You judge a set of independent verdicts. State APPROVE or REJECT only when the "
            "verdicts support it; otherwise SPLIT. Give your confidence, what they agree and "
            "disagree on, and a recommendation."
        ),
        tier="strong",
        output_model=Judgement,
    ),
    AgentSpec(
        name="orchestrator",
        purpose="Splits a task into independent subtasks for parallel workers.",
        system_prompt=(
            "You plan work for parallel workers. Split the request into independent subtasks, "
            "each with a short snake_case name and precise instructions. No overlaps."
        ),
        tier="strong",
        output_model=Plan,
    ),
    AgentSpec(
        name="synthesizer",
        purpose="Combines the workers' results into one answer and names the gaps.",
        system_prompt=(
            "You combine the results of parallel workers into one coherent answer, one section "
            "per subtask, and list the subtasks that failed or left gaps."
        ),
        tier="strong",
        output_model=Synthesis,
        max_tokens=4096,
    ),
)


def route_decision_model(targets: tuple[str, ...]) -> type[RouteDecision]:
    """RouteDecision narrowed to the registered targets, so the schema itself forbids others."""
    agent_type = Literal[targets]  # type: ignore[valid-type]
    return create_model("RouteDecision", __base__=RouteDecision, agent=(agent_type, ...))


def _router_prompt(specialists: tuple[AgentSpec, ...]) -> str:
    lines = "\n".join(f"- {spec.name}: {spec.purpose}" for spec in specialists)
    return (
        "You are a dispatcher. Classify the request and choose exactly one specialist agent "
        "to handle it, with a priority and a one-sentence reason.\n"
        f"Specialists:\n{lines}"
    )


ROUTER = AgentSpec(
    name="router",
    purpose="Classifies a request and delegates it to one specialist.",
    system_prompt=_router_prompt(_SPECIALISTS),
    tier="fast",
    output_model=route_decision_model(ROUTER_TARGETS),
    max_tokens=512,
)

AGENTS: Mapping[str, AgentSpec] = {
    spec.name: spec for spec in (ROUTER, *_SPECIALISTS, *_WORKFLOW_AGENTS)
}


def get_agent(name: str) -> AgentSpec:
    """The spec for `name`; KeyError names the registered agents so the fix is obvious."""
    try:
        return AGENTS[name]
    except KeyError:
        known = ", ".join(sorted(AGENTS))
        raise KeyError(f"unknown agent {name!r}; registered agents: {known}") from None


def queues_for(names: list[str] | tuple[str, ...]) -> list[str]:
    return [get_agent(name).queue for name in names]
