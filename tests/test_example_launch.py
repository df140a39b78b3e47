"""examples/launch end to end, as its README runs it: research with a tool, a fact-checker,
writers in parallel that deliver their posts, an editor that names contradictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import with_db

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "launch"
CHORUS = str(Path(sys.executable).with_name("chorus"))


def test_the_launch_example_researches_checks_writes_delivers_and_merges(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    done = subprocess.run(
        [CHORUS, "-A", "launch_team", "run", "Chorus 2.0 ships on Monday", "--embedded", "--json"],
        cwd=EXAMPLE,
        env={**with_db(stack_env, 8), "LAUNCH_OUTBOX": str(outbox)},  # a database of its own
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    agents = [step["agent"] for step in document["steps"]]
    assert document["workflow"] == "launch"
    assert agents[0] == "scout"
    assert "fact_checker" in agents
    assert agents.count("writer") == 2
    assert agents[-1] == "editor"
    assert set(document["result"]) == {"summary", "contradictions"}
    scout = document["steps"][0]
    assert [call["name"] for call in scout["tool_calls"]] == ["lookup"] * len(scout["tool_calls"])
    assert scout["tool_calls"], "the scout looked nothing up"
    delivered = sorted(outbox.glob(f"{document['task_id']}-*.txt"))
    assert len(delivered) == 2  # one post per channel, each written by its writer's tool
    assert all(path.read_text() for path in delivered)
