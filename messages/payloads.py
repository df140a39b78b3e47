"""Payload schemas: the body of each kind of message.

An agent's output schema is sent to Claude as the structured-output schema and the answer is
validated with the same model, so these definitions are the single source of truth for both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from messages.errors import ErrorCode

Priority = Literal["high", "normal", "low"]

MAX_TEXT = 100_000
"""Characters accepted in a task's text; larger inputs belong in a blackboard reference."""


class Payload(BaseModel):
    """Base for payloads: unknown fields are refused so a schema drift is loud, not silent."""

    model_config = ConfigDict(extra="forbid")


class TaskRequest(Payload):
    """What a producer (or a delegating agent) asks an agent to do."""

    text: str = Field(min_length=1, max_length=MAX_TEXT, description="The user's request.")
    instructions: str | None = Field(
        default=None, max_length=MAX_TEXT, description="Extra guidance from the delegating step."
    )
    context: dict[str, Any] = Field(
        default_factory=dict, description="Earlier results this step builds on, by agent name."
    )


class RouteDecision(Payload):
    """The router's answer: which specialist takes the task, how urgently, and why."""

    agent: str = Field(description="Name of the specialist agent that should handle the request.")
    priority: Priority = Field(description="How urgent the request is.")
    reasoning: str = Field(min_length=1, max_length=2_000, description="One or two sentences.")


class ResearchFindings(Payload):
    summary: str = Field(min_length=1, description="The answer in a short paragraph.")
    key_points: list[str] = Field(min_length=1, max_length=8, description="Main findings.")
    open_questions: list[str] = Field(
        max_length=5, description="What remains uncertain or needs checking."
    )
    confidence: float = Field(ge=0, le=1, description="Confidence in the findings, 0 to 1.")


class CodeReview(Payload):
    verdict: Literal["approve", "request_changes", "comment"]
    summary: str = Field(min_length=1, description="Overall assessment in a few sentences.")
    issues: list[str] = Field(max_length=10, description="Defects, each with where and why.")
    suggestions: list[str] = Field(max_length=10, description="Improvements worth making.")


class Summary(Payload):
    summary: str = Field(min_length=1, description="A faithful summary in a short paragraph.")
    bullet_points: list[str] = Field(min_length=1, max_length=7, description="Key takeaways.")


class Critique(Payload):
    verdict: Literal["pass", "revise"] = Field(description="pass if good enough, else revise.")
    strengths: list[str] = Field(max_length=5)
    weaknesses: list[str] = Field(max_length=5)
    reasons: str = Field(min_length=1, description="Why this verdict, concretely.")


class ErrorPayload(Payload):
    """Body of an error result: a stable code to match on and a message that says what to do."""

    code: ErrorCode
    message: str
    agent: str = Field(description="Agent whose step failed.")
    detail: dict[str, Any] = Field(default_factory=dict)
    raw_output: str | None = Field(default=None, description="Model output kept for debugging.")


class Draft(Payload):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, description="The draft itself.")
    key_claims: list[str] = Field(max_length=8, description="Claims a critic should check.")


class Contradiction(Payload):
    between: list[str] = Field(min_length=2, description="Names of the branches that disagree.")
    description: str = Field(min_length=1, description="What they disagree about.")


class MergedAnalysis(Payload):
    """A merge that reports disagreement instead of inventing agreement."""

    summary: str = Field(min_length=1)
    agreements: list[str] = Field(max_length=10, description="Points every branch supports.")
    contradictions: list[Contradiction] = Field(
        max_length=10, description="Where branches disagree; empty only if none do."
    )
    missing: list[str] = Field(
        max_length=10, description="Branches that failed or questions nobody answered."
    )
    recommendation: str = Field(min_length=1)


Vote = Literal["APPROVE", "REJECT", "UNCERTAIN"]


class Verdict(Payload):
    verdict: Vote
    confidence: float = Field(ge=0, le=1)
    reasons: list[str] = Field(min_length=1, max_length=6)


class Judgement(Payload):
    consensus: Literal["APPROVE", "REJECT", "SPLIT"]
    confidence: float = Field(ge=0, le=1)
    key_agreements: list[str] = Field(max_length=8)
    key_disagreements: list[str] = Field(max_length=8)
    recommendation: str = Field(min_length=1)


class Subtask(Payload):
    name: str = Field(min_length=1, max_length=80, description="A short label.")
    instructions: str = Field(min_length=1, description="What this worker should do.")


class Plan(Payload):
    subtasks: list[Subtask] = Field(min_length=1, max_length=10)


class Synthesis(Payload):
    summary: str = Field(min_length=1)
    sections: list[str] = Field(min_length=1, max_length=10, description="One per subtask.")
    gaps: list[str] = Field(max_length=10, description="Subtasks that failed or left gaps.")


class EvaluatedDraft(Payload):
    """The evaluator-optimizer's final answer: the last draft and the critique it got."""

    draft: Draft
    critique: Critique
    rounds: int = Field(ge=1)
    accepted: bool
