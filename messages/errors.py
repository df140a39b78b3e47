"""One error root, stable error codes, and the errors a user of the envelope can meet."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable codes that end a task; users match on these, so never rename one."""

    INVALID_MESSAGE = "invalid_message"
    WRONG_RECIPIENT = "wrong_recipient"
    UNKNOWN_AGENT = "unknown_agent"
    INVALID_OUTPUT = "invalid_output"
    DEPTH_EXCEEDED = "depth_exceeded"
    MODEL_ERROR = "model_error"
    QUORUM_NOT_MET = "quorum_not_met"
    LOOP_DETECTED = "loop_detected"
    BUDGET_EXCEEDED = "budget_exceeded"
    RETRY_LIMIT = "retry_limit"
    TOOL_LIMIT = "tool_limit"
    """A tool loop used its model turns (AgentSpec.max_turns) without a final answer."""
    BATCH_ERRORED = "batch_errored"
    """A batched model call came back `errored` (its error type and message in the detail)."""
    BATCH_EXPIRED = "batch_expired"
    """A batched model call was not processed before its batch expired (24 h)."""
    BATCH_CANCELED = "batch_canceled"
    """The batch holding the step's model call was canceled before the call was processed."""
    INTERNAL_ERROR = "internal_error"


class ChorusError(Exception):
    """Root of every error Chorus raises on purpose."""


class InvalidMessageError(ChorusError, ValueError):
    """An AgentMessage (or its JSON) does not satisfy the envelope's rules.

    `field` names the first offending field (dotted for nested ones), `reason` says what is wrong,
    so the error can be reported to whoever produced the message without a traceback.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid AgentMessage: field {field!r}: {reason}")
