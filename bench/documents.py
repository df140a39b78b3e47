"""Bytes through Redis when a 50-way fan-out reads one 1 MB document.

The document is stored once on the task's blackboard; the fifty branch messages carry its id.
Measured as Redis's own count of bytes received (INFO stats `total_net_input_bytes`) around a
submit with no worker running, so only the producer's writes count. The baseline is the same
fan-out with the document copied into every branch message, computed from the document's size.

    .venv/bin/python -m bench.documents
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path
from typing import Any

import redis

from dispatcher.dispatcher import Dispatcher
from dispatcher.embedded import start_redis
from workers.app import create_app
from workers.settings import Settings

BRANCHES = 50
DOCUMENT_BYTES = 1_000_000


def run(redis_url: str | None = None, branches: int = BRANCHES) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="chorus-bench-docs-"))
    server = None
    if redis_url is None:
        server, redis_url = start_redis(work)
    try:
        env = {"CHORUS_REDIS_URL": redis_url, "ANTHROPIC_API_KEY": "unused"}
        dispatcher = Dispatcher(create_app(Settings.from_env(env)))
        client = redis.Redis.from_url(redis_url)
        line = "The archive holds every launch note, one paragraph per release, in order. "
        document = (line * (DOCUMENT_BYTES // len(line) + 1))[:DOCUMENT_BYTES]
        aspects = [(f"part_{i}", f"Summarize part {i} of the document.") for i in range(branches)]

        def published(**extra: Any) -> int:
            before = int(client.info("stats")["total_net_input_bytes"])
            dispatcher.submit("Summarize the archive.", workflow="fanout", aspects=aspects, **extra)
            return int(client.info("stats")["total_net_input_bytes"]) - before

        without = published()
        with_document = published(documents=[{"name": "archive.txt", "text": document}])
        per_branch = (with_document - DOCUMENT_BYTES) / branches
        copied = without + branches * DOCUMENT_BYTES
        return {
            "branches": branches,
            "document_bytes": DOCUMENT_BYTES,
            "published_bytes": with_document,
            "per_branch_bytes": per_branch,
            "copied_bytes": copied,
            "ratio": with_document / copied,
        }
    finally:
        gc.collect()  # the publishes' result handles, before their Redis goes away
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--branches", type=int, default=BRANCHES)
    args = parser.parse_args(argv)
    result = run(branches=args.branches)
    print(
        f"{result['branches']}-way fan-out over a {result['document_bytes'] / 1e6:.1f} MB "
        f"document: {result['published_bytes'] / 1e3:.1f} kB published "
        f"({result['per_branch_bytes'] / 1e3:.1f} kB per branch beyond the document once); "
        f"copied into every branch: {result['copied_bytes'] / 1e6:.1f} MB; "
        f"ratio {result['ratio']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
