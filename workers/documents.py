"""Large inputs stored once per task on the blackboard and referenced by id from messages.

A 50-way fan-out over a 1 MB document publishes fifty small messages that each carry the
document's id; every step reads the text from Redis when it builds its prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis

from messages import ChorusError
from workers import keys

Document = str | Mapping[str, str]
"""A text, or {"name": ..., "text": ...}."""

MAX_DOCUMENT_CHARS = 20_000_000


def store_documents(
    client: redis.Redis, task_id: str, documents: Sequence[Document], ttl: int
) -> list[dict[str, Any]]:
    """Write each document once; the references go into the request's context."""
    if isinstance(documents, str | bytes | Mapping):
        raise ChorusError("documents is a list: documents=[text, ...]")
    refs: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    for index, document in enumerate(documents, 1):
        if isinstance(document, str):
            name, text = f"document_{index}", document
        elif isinstance(document, Mapping) and isinstance(document.get("text"), str):
            name, text = str(document.get("name") or f"document_{index}"), document["text"]
        else:
            raise ChorusError(
                f"document {index} must be a text or {{'name': ..., 'text': ...}}, "
                f"not {type(document).__name__}"
            )
        if len(text) > MAX_DOCUMENT_CHARS:
            raise ChorusError(f"document {name!r} is over {MAX_DOCUMENT_CHARS} characters")
        doc_id = hashlib.sha256(text.encode()).hexdigest()[:24]
        texts[doc_id] = text
        refs.append({"id": doc_id, "name": name, "chars": len(text)})
    if texts:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.documents(task_id), mapping=cast(Any, texts))
            pipe.expire(keys.documents(task_id), ttl)
            pipe.execute()
    return refs


def load_documents(client: redis.Redis, task_id: str, refs: object) -> list[tuple[str, str]]:
    """(name, text) of each referenced document; a missing one says so instead of vanishing."""
    if not isinstance(refs, list) or not refs:
        return []
    ids = [str(ref.get("id")) for ref in refs if isinstance(ref, dict)]
    values = cast(list[bytes | None], client.hmget(keys.documents(task_id), ids))
    loaded = []
    for ref, value in zip(refs, values, strict=False):
        name = str(ref.get("name", ref.get("id")))
        if value is None:
            raise ChorusError(f"document {name!r} of task {task_id} is gone (expired?)")
        loaded.append((name, value.decode()))
    return loaded
