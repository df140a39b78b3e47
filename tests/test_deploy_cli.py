"""`chorus -A app deploy compose|k8s`: deployment files made from the user's own app."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

TEAM = """
from pydantic import BaseModel
import chorus

app = chorus.App("notes")

class Note(BaseModel):
    title: str

app.agent("writer", purpose="Writes a note.", instructions="You write one note.", output=Note)
app.agent("checker", purpose="Checks a note.", instructions="You check it.", tier="fast",
          output=Note)
app.workflow("note", chorus.pipeline("writer", "checker"))
"""


def chorus(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_and_kubernetes_files_come_from_the_users_agents(tmp_path: Path) -> None:
    (tmp_path / "notes_team.py").write_text(textwrap.dedent(TEAM))
    done = chorus(tmp_path, "-A", "notes_team", "deploy", "compose")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"writer", "checker"} <= set(services)
    assert "router" not in services  # the seed team's agents are not this app's
    assert "CHORUS_APP" in done.stdout
    assert "notes_team" in done.stdout

    done = chorus(tmp_path, "-A", "notes_team", "deploy", "k8s", "k8s")
    assert done.returncode == 0, done.stderr
    written = {path.name for path in (tmp_path / "k8s").rglob("*.yaml")}
    assert any("writer" in name for name in written)
    assert any("checker" in name for name in written)
    again = chorus(tmp_path, "-A", "notes_team", "deploy", "k8s", "k8s")
    assert again.returncode == 0, "regenerating its own files is allowed"


def test_the_repositorys_compose_file_is_the_seed_apps_output() -> None:
    root = Path(__file__).resolve().parent.parent
    done = chorus(root, "deploy", "compose")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (root / "docker-compose.yml").read_text()
