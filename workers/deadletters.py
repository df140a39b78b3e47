"""Dead letters: every terminal error lands in the `chorus:dlq` stream with its message and cause.

A step's own dead letter is written by record_step, in the call that stores the step (so an
error never exists without its letter); `DeadLetterWriter` writes the ones with no step record
to ride with: a message that could not be decoded, an audit row SQL refused. `chorus dlq`
(dispatcher/deadletters.py) reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from workers import keys, scripts
from workers.audit_events import AuditStream

DEAD_LETTER_MAXLEN = 100_000
"""Letters kept, approximately."""
DEAD_LETTER_BODY_LIMIT = 64_000
"""Characters of the message kept; a letter cut shorter than its message is not retryable."""

_DEAD_LETTER = scripts.load("dead_letter")


@dataclass(frozen=True)
class DeadLetter:
    """A terminal error and the message that caused it."""

    agent: str
    """The agent (or `auditor`) that gave up on the message."""
    code: str
    """The stable error code (`invalid_output`, `budget_exceeded`, ..., `audit_row`)."""
    error: str
    """What went wrong, in words."""
    body: object
    """The message: a string as it arrived, or anything JSON can encode (repr otherwise)."""
    options: dict[str, Any] | None = None
    """The step's workflow options: with them `chorus dlq retry` can send the message again."""

    def encode(self, task_id: str) -> str:
        """The letter as the Lua side takes it (lib/dead_letter.lua)."""
        text = self.body if isinstance(self.body, str) else json.dumps(self.body, default=repr)
        letter = {
            "task_id": task_id,
            "agent": self.agent,
            "code": self.code,
            "error": self.error,
            "body": text[:DEAD_LETTER_BODY_LIMIT],
        }
        if self.options is not None and len(text) <= DEAD_LETTER_BODY_LIMIT:
            letter["options"] = json.dumps(self.options)
        return json.dumps(letter)


class DeadLetterWriter:
    """Writes dead letters that no step record carries, with their audit event."""

    def __init__(self, client: redis.Redis, audit: AuditStream) -> None:
        self._redis = client
        self._audit = audit

    def write(self, task_id: str, letter: DeadLetter, *, at: str, audit: bool = True) -> None:
        """`audit=False` for letters about the audit trail itself (no event about an event)."""
        stream = self._audit if audit else AuditStream(maxlen=0)
        _DEAD_LETTER(
            self._redis,
            keys={
                "dead_letters": keys.DEAD_LETTERS,
                "audit": keys.AUDIT,
                "task": keys.task(task_id),
            },
            args={
                "letter": letter.encode(task_id),
                "maxlen": DEAD_LETTER_MAXLEN,
                "now": at,
                **stream.args(),
            },
        )
