"""Pure data shared by producers and agents: the message envelope, payload schemas, error codes.

Nothing here imports Celery or Redis, so any producer (or a test) can build and check messages
without a broker.
"""

from messages.envelope import SCHEMA_VERSION, AgentMessage, MessageType
from messages.errors import ChorusError, ErrorCode, InvalidMessageError
from messages.payloads import (
    CodeReview,
    Critique,
    Draft,
    ErrorPayload,
    EvaluatedDraft,
    Judgement,
    MergedAnalysis,
    Plan,
    Priority,
    ResearchFindings,
    RouteDecision,
    Summary,
    Synthesis,
    TaskRequest,
    Verdict,
)

__all__ = [
    "SCHEMA_VERSION",
    "AgentMessage",
    "ChorusError",
    "CodeReview",
    "Critique",
    "Draft",
    "ErrorCode",
    "ErrorPayload",
    "EvaluatedDraft",
    "InvalidMessageError",
    "Judgement",
    "MergedAnalysis",
    "MessageType",
    "Plan",
    "Priority",
    "ResearchFindings",
    "RouteDecision",
    "Summary",
    "Synthesis",
    "TaskRequest",
    "Verdict",
]
