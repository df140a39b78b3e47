"""Object ids in the API's style (`msg_…`, `msgbatch_…`, `req_…`), marked as simulated."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"
