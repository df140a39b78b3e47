"""`chorus dlq list | show ID | retry ID`: every terminal error, with the message that caused it.

A retry sends the same request again as a new message (new id, retry_count + 1, same parent and
task), with the step's original workflow options, so the task can still finish; the letter
stays in the stream, marked with what it was retried as.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from dispatcher.dispatcher import Dispatcher
from messages import AgentMessage, ChorusError
from messages.envelope import new_id
from workers import keys
from workers.canvas import agent_signature
from workers.flow import StepOptions


@dataclass(frozen=True)
class DeadLetter:
    id: str
    task_id: str
    agent: str
    code: str
    error: str
    at: str
    body: str
    options: dict[str, Any] | None
    retried_as: str | None

    @property
    def retryable(self) -> bool:
        return self.options is not None and self.retried_as is None

    def document(self) -> dict[str, Any]:
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body
        return {
            "id": self.id,
            "task_id": self.task_id,
            "agent": self.agent,
            "code": self.code,
            "error": self.error,
            "at": self.at,
            "message": body,
            "options": self.options,
            "retryable": self.retryable,
            "retried_as": self.retried_as,
        }


class DeadLetters:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._redis: redis.Redis = dispatcher.app.runtime().redis

    def _letter(self, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
        text = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        retried = self._redis.hget(keys.DEAD_LETTER_RETRIES, entry_id)
        return DeadLetter(
            id=entry_id.decode(),
            task_id=text.get("task_id", ""),
            agent=text.get("agent", ""),
            code=text.get("code", ""),
            error=text.get("error", ""),
            at=text.get("at", ""),
            body=text.get("body", ""),
            options=json.loads(text["options"]) if "options" in text else None,
            retried_as=cast(bytes, retried).decode() if retried else None,
        )

    def list(
        self, *, limit: int = 50, agent: str | None = None, code: str | None = None
    ) -> list[DeadLetter]:
        """Newest first."""
        letters: list[DeadLetter] = []
        last = "+"
        while len(letters) < limit:
            batch = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                self._redis.xrevrange(keys.DEAD_LETTERS, max=last, count=200),
            )
            if last != "+":
                batch = batch[1:]  # the boundary entry was in the previous batch
            if not batch:
                break
            for entry_id, fields in batch:
                letter = self._letter(entry_id, fields)
                if (agent is None or letter.agent == agent) and (
                    code is None or letter.code == code
                ):
                    letters.append(letter)
            last = batch[-1][0].decode()
        return letters[:limit]

    def show(self, letter_id: str) -> DeadLetter:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self._redis.xrange(keys.DEAD_LETTERS, min=letter_id, max=letter_id),
        )
        if not entries:
            raise ChorusError(f"no dead letter {letter_id} (see `chorus dlq list`)")
        return self._letter(*entries[0])

    def retry(self, letter_id: str) -> AgentMessage:
        letter = self.show(letter_id)
        if letter.retried_as:
            raise ChorusError(f"dead letter {letter_id} was already retried as {letter.retried_as}")
        if letter.options is None:
            raise ChorusError(
                f"dead letter {letter_id} cannot be retried: it is a merge step that needs its "
                "branches' answers, or a message that could not be decoded (fix and resubmit)"
            )
        original = AgentMessage.from_json(letter.body)
        again = AgentMessage.from_dict(
            {**original.to_dict(), "message_id": new_id(), "retry_count": original.retry_count + 1}
        )
        if not self._redis.hsetnx(keys.DEAD_LETTER_RETRIES, letter_id, again.message_id):
            raise ChorusError(f"dead letter {letter_id} is being retried by someone else")
        options = StepOptions.model_validate(letter.options)
        agent_signature(self._dispatcher.app, letter.agent, again, options).apply_async()
        return again


def cmd_dlq(args: argparse.Namespace) -> int:
    letters = DeadLetters(Dispatcher())
    if args.dlq_command == "list":
        found = letters.list(limit=args.limit, agent=args.agent, code=args.code)
        for letter in found:
            if args.json:
                print(json.dumps(letter.document()))
                continue
            mark = f" (retried as {letter.retried_as})" if letter.retried_as else ""
            print(
                f"{letter.id}  {letter.at}  {letter.agent:<12} {letter.code:<16} "
                f"task {letter.task_id}{mark}\n    {letter.error[:160]}"
            )
        if not args.json:
            print(f"{len(found)} dead letter(s)")
        return 0
    if args.dlq_command == "show":
        print(json.dumps(letters.show(args.letter_id).document(), indent=2))
        return 0
    again = letters.retry(args.letter_id)
    print(
        f"retried as message {again.message_id} to {again.recipient}; "
        f"follow it with `chorus status {again.task_id}`"
    )
    return 0
