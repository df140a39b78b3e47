"""Helpers several test modules share (test modules never import each other)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from workers.models import DEFAULT_PRICES, Usage, cost_micro_usd


def chorus(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The `chorus` command as a user runs it, in a subprocess with no standard input."""
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def with_db(env: dict[str, str], db: int) -> dict[str, str]:
    """The same Redis server, another database: no worker listens there."""
    return {**env, "CHORUS_REDIS_URL": env["CHORUS_REDIS_URL"].rsplit("/", 1)[0] + f"/{db}"}


def billed_micro_usd(report: dict[str, Any]) -> int:
    """What a simulator ledger report comes to at the default prices."""
    return sum(
        cost_micro_usd(Usage(**call["usage"]), DEFAULT_PRICES[call["model"]])
        for call in report["calls"]
    )
