"""Live progress for a terminal: which agents have answered, the status, the cost so far."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from dispatcher.handle import TaskHandle
from dispatcher.render import usd
from messages.status import FINISHED


def _counts(info: dict[str, Any], prefix: str) -> str:
    """'research x2, merger' from the task's per-agent counters."""
    parts = []
    for key, value in sorted(info.items()):
        if key.startswith(prefix) and int(value) > 0:
            agent, count = key.removeprefix(prefix), int(value)
            parts.append(agent if count == 1 else f"{agent} x{count}")
    return ", ".join(parts)


def watch(handle: TaskHandle, timeout: float, out: TextIO = sys.stderr, every: float = 0.3) -> None:
    """Print a line per finished step until the task ends (or `timeout` passes)."""
    seen = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = handle.trace()
        for step in steps[seen:]:
            mark = "ok" if step.status == "ok" else "FAILED"
            out.write(f"\r\x1b[K  .. {step.agent:<12} {mark:<6} on {step.queue} ({step.model})\n")
        seen = len(steps)
        info = handle.status()
        status = info.get("status", "submitted")
        cost = usd(int(info.get("cost_micro_usd", 0)))
        queued, running = _counts(info, "queued:"), _counts(info, "running:")
        out.write(
            f"\r\x1b[K  {status:<12} queued [{queued}]  running [{running}]  "
            f"done {seen}  cost so far ${cost:.6f}"
        )
        out.flush()
        if status in FINISHED:
            out.write("\n")
            return
        time.sleep(every)
    out.write("\n")
