"""Pure data shared by producers and agents: the message envelope, payload schemas, error codes.

Nothing here imports Celery or Redis, so any producer (or a test) can build and check messages
without a broker.
"""

from messages.envelope import SCHEMA_VERSION, AgentMessage, MessageType
from messages.errors import ChorusError, ErrorCode, InvalidMessageError, TaskFailedError
from messages.payloads import (
    CodeReview,
    Critique,
    ErrorPayload,
    Priority,
    ResearchFindings,
    RouteDecision,
    Summary,
    TaskRequest,
)

__all__ = [
    "SCHEMA_VERSION",
    "AgentMessage",
    "ChorusError",
    "CodeReview",
    "Critique",
    "ErrorCode",
    "ErrorPayload",
    "InvalidMessageError",
    "MessageType",
    "Priority",
    "ResearchFindings",
    "RouteDecision",
    "Summary",
    "TaskFailedError",
    "TaskRequest",
]
