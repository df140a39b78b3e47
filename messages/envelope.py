"""The AgentMessage envelope: the only thing agents and producers exchange.

Messages travel through Celery as JSON objects (dicts), so the envelope is validated on every
decode. Lineage (`parent_message_id`, `depth`) lets anyone rebuild a task's whole conversation.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from messages.errors import InvalidMessageError

SCHEMA_VERSION = 1
"""Bump when the envelope changes shape; decoders refuse versions they do not know."""

ID_MAX_LENGTH = 128
"""Longest task or message id; the audit trail's SQL columns are sized from it."""
NAME_MAX_LENGTH = 64
"""Longest agent name."""
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{ID_MAX_LENGTH - 1}}}$"
NAME_PATTERN = rf"^[a-z][a-z0-9_]{{0,{NAME_MAX_LENGTH - 1}}}$"

Identifier = Annotated[str, Field(pattern=ID_PATTERN, strict=True)]
AgentName = Annotated[str, Field(pattern=NAME_PATTERN, strict=True)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]

MAX_PAYLOAD_BYTES = 512_000
"""A message's payload as JSON; larger inputs belong in storage, passed by reference (chord
results stay in Redis until the merge runs)."""

PRODUCER = "producer"
"""Sender name of messages that enter the system from outside (CLI, Dispatcher)."""


class MessageType(StrEnum):
    TASK = "task"
    """Work for the recipient agent."""
    RESULT = "result"
    """An agent's validated answer."""
    ERROR = "error"
    """An explicit error result: the task (or branch) ended without an answer."""


def new_id() -> str:
    return uuid.uuid4().hex


def derived_id(parent_id: str, purpose: str) -> str:
    """The same id every time a given message causes a given next message.

    A redelivered step that sends its hand-off again sends the same message id, so the begin
    script's dedupe makes the two copies one step, whichever runs first.
    """
    return hashlib.sha256(f"{parent_id}\x00{purpose}".encode()).hexdigest()[:32]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AgentMessage(BaseModel):
    """One typed, immutable envelope; every hop creates a child instead of mutating its input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    """Envelope version, so old workers refuse messages they cannot read instead of misreading."""
    task_id: Identifier
    """Shared by every message of one user request."""
    message_id: Identifier = Field(default_factory=new_id)
    """Unique per message; side effects (state, budgets) are keyed by it to survive redelivery."""
    sender: AgentName
    """Agent (or `producer`) that created the message."""
    recipient: AgentName
    """Agent the message is for; a worker refuses messages addressed to another agent."""
    message_type: MessageType
    payload: dict[str, Any]
    """The body: a JSON object whose schema depends on sender/recipient and message_type."""
    timestamp: AwareDatetime = Field(default_factory=utc_now)
    """Creation time, timezone-aware, normalised to UTC."""
    retry_count: Count = 0
    """How many times the work behind this message was retried."""
    parent_message_id: Identifier | None = None
    """The message this one answers or delegates from; None only for a task's root."""
    depth: Count = 0
    """Delegation hops from the root; guards cap it to stop runaway delegation."""

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("payload")
    @classmethod
    def _json_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value, allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"payload must be plain JSON: {exc}") from None
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"payload is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit; "
                "store large inputs elsewhere and pass a reference"
            )
        return value

    @field_validator("parent_message_id")
    @classmethod
    def _not_own_parent(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("message_id"):
            raise ValueError("must differ from message_id")
        return value

    @field_validator("depth")
    @classmethod
    def _depth_matches_lineage(cls, value: int, info: ValidationInfo) -> int:
        has_parent = info.data.get("parent_message_id") is not None
        if not has_parent and value != 0 and "parent_message_id" in info.data:
            raise ValueError("must be 0 for a root message (parent_message_id is null)")
        if has_parent and value == 0:
            raise ValueError("must be at least 1 when parent_message_id is set")
        return value

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def root(
        cls,
        *,
        recipient: str,
        payload: dict[str, Any],
        sender: str = PRODUCER,
        task_id: str | None = None,
    ) -> AgentMessage:
        """The first message of a task: depth 0, no parent, a new task_id unless given."""
        return cls.create(
            task_id=task_id or new_id(),
            sender=sender,
            recipient=recipient,
            message_type=MessageType.TASK,
            payload=payload,
        )

    def child(
        self,
        *,
        sender: str,
        recipient: str,
        payload: dict[str, Any],
        message_type: MessageType = MessageType.TASK,
        purpose: str | None = None,
    ) -> AgentMessage:
        """A message caused by this one: same task, parent link set, one level deeper.

        With `purpose`, its id is derived from this message's id (see `derived_id`)."""
        extra = {"message_id": derived_id(self.message_id, purpose)} if purpose else {}
        return self.create(
            **extra,
            task_id=self.task_id,
            sender=sender,
            recipient=recipient,
            message_type=message_type,
            payload=payload,
            parent_message_id=self.message_id,
            depth=self.depth + 1,
        )

    @classmethod
    def create(cls, **fields: Any) -> AgentMessage:
        """Build and validate from keyword fields, raising InvalidMessageError on bad input."""
        return cls.from_dict(fields)

    # -- wire format --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: this is what travels as a Celery task argument."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_dict(cls, data: object) -> AgentMessage:
        if not isinstance(data, dict):
            raise InvalidMessageError("<message>", f"expected a JSON object, got {_kind(data)}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc) from None

    @classmethod
    def from_json(cls, raw: str | bytes) -> AgentMessage:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidMessageError("<message>", f"not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _invalid(exc: ValidationError) -> InvalidMessageError:
    """Name the first offending field and its reason; count the rest."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "<message>"
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown field"
    elif first["type"] == "missing":
        reason = "field required"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error(s))"
    return InvalidMessageError(field, reason)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
