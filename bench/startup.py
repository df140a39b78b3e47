"""Start-up of the commands people type, beside the interpreter alone and `import anthropic`.

`chorus --help`, `chorus status ID` (an ID in neither Redis nor an existing audit database,
so both are read) and a producer's `from dispatcher import Dispatcher` run as fresh processes,
as a user runs them; each figure is the median of a few runs. The baselines, measured in the
same run, are `python -c pass` (the floor) and `python -c "import anthropic"` (what every
command paid when the CLI imported the SDK).

    .venv/bin/python -m bench --only startup
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workers.audit_store import AuditStore

RUNS = 5
TARGET_S = 1.0
"""Issue 17: `chorus --help` and `chorus status ID` start in under a second."""


def median_seconds(argv: list[str], env: dict[str, str], runs: int = RUNS) -> float:
    """Median wall time of `argv` as a fresh process (its exit status is not judged: an
    unknown task ends `status` with 1)."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=False, timeout=60)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def run(work: Path, redis_url: str) -> dict[str, Any]:
    database = work / "startup-audit.db"
    AuditStore(f"sqlite:///{database}").close()  # exists, so `status` looks there too
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))},
        "CHORUS_REDIS_URL": redis_url,
        "CHORUS_DATABASE_URL": f"sqlite:///{database}",
    }
    chorus = str(Path(sys.executable).with_name("chorus"))
    python = sys.executable
    return {
        "python": median_seconds([python, "-c", "pass"], env),
        "anthropic": median_seconds([python, "-c", "import anthropic"], env),
        "help": median_seconds([chorus, "--help"], env),
        "status": median_seconds([chorus, "status", "0" * 32], env),
        "dispatcher": median_seconds([python, "-c", "from dispatcher import Dispatcher"], env),
    }


def rows(work: Path, redis_url: str) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    """The bench table's rows: each command beside `import anthropic`, the SDK's own start."""
    figures = run(work, redis_url)
    baseline = f"python {figures['python']:.2f} s; import anthropic {figures['anthropic']:.2f} s"
    table = []
    for key, figure, target in (
        ("help", "12. `chorus --help` start-up", TARGET_S),
        ("status", "12. `chorus status ID` start-up (Redis and SQL read)", TARGET_S),
        ("dispatcher", "12. `from dispatcher import Dispatcher` (a producer)", None),
    ):
        seconds = figures[key]
        table.append(
            (
                figure,
                f"{seconds:.2f} s",
                baseline,
                seconds / figures["anthropic"],
                f"< {target:g} s" if target else "reported",
                seconds < target if target else None,
            )
        )
    return table
