"""chorus.testing as a user's own test suite uses it: a real stack for their app, scripted
answers, and a task's cost equal to what the provider billed."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

TEAM = """
from pydantic import BaseModel
import chorus

app = chorus.App("notes")

class Note(BaseModel):
    title: str
    body: str

class Verdict(BaseModel):
    ok: bool
    reason: str

app.agent("writer", purpose="Writes a note.", instructions="You write one short note.",
          output=Note)
app.agent("checker", purpose="Checks a note.", instructions="You check the note you get.",
          tier="fast", output=Verdict)
app.workflow("note", chorus.pipeline("writer", "checker"))
"""

CONFTEST = """
import pytest
pytest_plugins = ["chorus.testing"]

@pytest.fixture(scope="session")
def chorus_app():
    from notes_team import app
    return app
"""

TESTS = """
def test_a_scripted_answer_reaches_the_next_step(chorus_stack):
    chorus_stack.script("checker", {"ok": False, "reason": "too vague"})
    outcome = chorus_stack.run("A note about Redis", workflow="note")
    assert outcome.ok
    assert outcome.result == {"ok": False, "reason": "too vague"}
    assert outcome.cost_micro_usd == chorus_stack.billed_micro_usd(outcome.task_id) > 0

def test_scripts_do_not_leak_into_the_next_test(chorus_stack):
    outcome = chorus_stack.run("A note about Celery", workflow="note")
    assert outcome.result["reason"] != "too vague"

def test_an_answer_that_does_not_fit_the_output_is_refused_before_it_is_sent(chorus_stack):
    import pytest
    with pytest.raises(ValueError):
        chorus_stack.script("writer", {"title": 3})
"""


def test_a_users_suite_runs_against_a_stack_for_their_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(notes_team=textwrap.dedent(TEAM))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_notes=TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=3)
