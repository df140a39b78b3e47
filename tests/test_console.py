"""`chorus console` against the test Redis, the audit trail and the real agent workers: over HTTP
(auth, CSRF, review decisions, dead letters, the task list and page) and in headless Chromium.

The console runs as its own process (`python -m dispatcher.console`, the `chorus console`
command), with its credentials in the environment as in Compose and Kubernetes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import (
    HTTPCookieProcessor,
    HTTPRedirectHandler,
    ProxyHandler,
    Request,
    build_opener,
)

import pytest

from dispatcher import Dispatcher
from dispatcher.console.auth import console_auth
from dispatcher.embedded import ManagedProcess, free_port, wait_until
from messages import AgentMessage, ChorusError
from workers import keys
from workers.audit_store import AuditStore

USER = "dana"
PASSWORD = "console-pw-0123456789-never-print-me"
OTHER_USER = "ops"
OTHER_PASSWORD = "console-other-pw-9876543210"
SECRET = "console-cookie-secret-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_PACKAGE = "chromium"

Script = Callable[[str, list[dict[str, Any]]], None]
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"Debian's chromium is not installed: apt-get install -y {CHROMIUM_PACKAGE}",
)


# -- the console process and an HTTP client with cookies ------------------------------------------


@dataclass(frozen=True)
class Console:
    url: str
    process: ManagedProcess


def start_console(
    name: str, env: dict[str, str], log_dir: Path, *extra: str
) -> tuple[ManagedProcess, str]:
    port = free_port()
    argv = [sys.executable, "-m", "dispatcher.console", "--port", str(port), *extra]
    process = ManagedProcess(f"{name}-{port}", argv, env, log_dir)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(f"chorus console exited:\n{process.log_tail()}")
        try:
            return Session(url).get("/healthz").status == 200
        except (URLError, OSError):
            return False

    wait_until(up, timeout=60, what="the console to answer")
    return process, url


@pytest.fixture(scope="module")
def console(
    stack_env: dict[str, str],
    log_dir: Path,
    workers: list[ManagedProcess],
    auditor: ManagedProcess,
) -> Iterator[Console]:
    env = {
        **stack_env,
        "CHORUS_CONSOLE_AUTH": f"{USER}:{PASSWORD},{OTHER_USER}:{OTHER_PASSWORD}",
        "CHORUS_CONSOLE_SECRET": SECRET,
    }
    process, url = start_console("console", env, log_dir)
    try:
        yield Console(url, process)
    finally:
        process.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Names in lower case."""
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the test looks at the 303 itself


class Session:
    """A browser-like client: keeps cookies, follows no redirects, ignores proxies."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = CookieJar()
        self._opener = build_opener(ProxyHandler({}), HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        data = None if form is None else urlencode(form).encode()
        request = Request(self.base + path, data=data, headers=sent, method=method)
        try:
            with self._opener.open(request, timeout=20) as answer:
                return Answer(answer.status, _lower(answer.headers), answer.read().decode())
        except HTTPError as error:
            return Answer(error.code, _lower(error.headers), error.read().decode())

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str], **kwargs: Any) -> Answer:
        return self.request("POST", path, form, **kwargs)

    def xsrf(self) -> str:
        """The `_xsrf` cookie the last form page set; tornado accepts it as the form token."""
        return next(cookie.value or "" for cookie in self.jar if cookie.name == "_xsrf")

    def login(self, user: str = USER, password: str = PASSWORD) -> Session:
        assert self.get("/login").status == 200
        answer = self.post("/login", {"user": user, "password": password, "_xsrf": self.xsrf()})
        assert answer.status == 303, answer.text
        return self


# -- tasks the tests review -----------------------------------------------------------------------


def unique(text: str) -> str:
    return f"{text} [case {uuid.uuid4().hex[:8]}]"


def verdict(vote: str) -> dict[str, Any]:
    return {"tool_input": {"verdict": vote, "confidence": 0.8, "reasons": [f"{vote} because"]}}


SPLIT_JUDGEMENT = {
    "tool_input": {
        "consensus": "SPLIT",
        "confidence": 0.4,
        "key_agreements": ["cost matters"],
        "key_disagreements": ["risk appetite"],
        "recommendation": "Decide with the budget owner.",
    }
}


def split_task(dispatcher: Dispatcher, script_model: Script) -> str:
    """A consensus the judge calls SPLIT: it waits in the review queue."""
    text = unique("Approve the vendor contract?")
    votes = [verdict("APPROVE"), verdict("REJECT"), verdict("UNCERTAIN")]
    script_model(text, [*votes, SPLIT_JUDGEMENT])
    handle = dispatcher.submit(text, pattern="consensus")
    assert handle.wait(60).status == "needs_review"
    return handle.task_id


def task_path(task_id: str) -> str:
    return f"/tasks/{quote(task_id, safe='')}"


# -- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/tasks", "/reviews", "/deadletters", "/api/tasks"])
def test_a_request_without_credentials_gets_401(console: Console, path: str) -> None:
    answer = Session(console.url).get(path)
    assert answer.status == 401
    if path.startswith("/api/"):
        assert answer.headers["www-authenticate"].startswith("Basic")
        assert "authentication required" in answer.json()["error"]
    else:
        assert 'name="password"' in answer.text  # the body is the login form


@pytest.mark.parametrize(
    "auth",
    [(USER, "wrong-password"), ("intruder", PASSWORD), (USER, "")],
    ids=["pw", "user", "empty"],
)
def test_wrong_credentials_get_401_by_basic_auth_and_by_the_form(
    console: Console, auth: tuple[str, str]
) -> None:
    session = Session(console.url)
    assert session.get("/api/tasks", auth=auth).status == 401
    session.get("/login")
    answer = session.post("/login", {"user": auth[0], "password": auth[1], "_xsrf": session.xsrf()})
    assert answer.status == 401
    assert "Wrong user name or password" in answer.text
    assert session.get("/").status == 401  # no session cookie was set


def test_basic_auth_and_the_login_cookie_both_open_the_console(console: Console) -> None:
    assert Session(console.url).get("/api/tasks", auth=(USER, PASSWORD)).status == 200
    session = Session(console.url).login()
    page = session.get("/")
    assert page.status == 200
    assert f'<strong id="user">{USER}</strong>' in page.text
    session.post("/logout", {"_xsrf": session.xsrf()})
    assert session.get("/").status == 401


def test_a_forged_session_cookie_is_refused(console: Console) -> None:
    session = Session(console.url)
    forged = f"chorus_console_session={USER}:{'0' * 32}"
    assert session.get("/api/tasks", headers={"Cookie": forged}).status == 401


def test_login_sends_nobody_off_the_console(console: Console) -> None:
    session = Session(console.url)
    session.get("/login")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        form = {"user": USER, "password": PASSWORD, "_xsrf": session.xsrf(), "next": target}
        answer = session.post("/login", form)
        assert (answer.status, answer.headers["location"]) == (303, "/")


def test_the_password_is_never_printed_or_on_a_command_line(console: Console) -> None:
    Session(console.url).login()
    log = console.process.log_path.read_text(errors="replace")
    assert f"login as {USER}, {OTHER_USER}" in log
    assert f"{USER} logged in" in log
    for secret in (PASSWORD, OTHER_PASSWORD, SECRET):
        assert secret not in log
        assert secret not in " ".join(map(str, console.process.process.args))


def test_the_console_refuses_to_start_without_auth(stack_env: dict[str, str]) -> None:
    env = {k: v for k, v in stack_env.items() if not k.startswith("CHORUS_CONSOLE_")}
    base = [sys.executable, "-m", "dispatcher.console", "--port", str(free_port())]
    cases = {
        "no auth": ([], "needs credentials"),
        "no auth on every interface": (["--no-auth", "--address", "0.0.0.0"], "loopback"),
        "no password": (["--basic-auth", USER], "user:password"),
        "both": (["--no-auth", "--basic-auth", f"{USER}:{PASSWORD}"], "contradict"),
    }
    for case, (extra, message) in cases.items():
        done = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, case
        assert message in done.stderr, case


@pytest.mark.parametrize("address", ["0.0.0.0", "", "10.0.0.5", "console.example.com", "::"])
def test_no_auth_elsewhere_than_loopback_is_refused(address: str) -> None:
    with pytest.raises(ChorusError, match="loopback"):
        console_auth({}, address=address, no_auth=True)


def test_basic_auth_wins_over_the_environment_and_a_short_secret_is_refused() -> None:
    env = {"CHORUS_CONSOLE_AUTH": "a:b"}
    auth = console_auth(env, address="0.0.0.0", basic_auth="c:d:e")
    assert (auth.user_names, auth.check("c", "d:e"), auth.check("a", "b")) == (["c"], True, False)
    assert auth.secret_generated
    with pytest.raises(ChorusError, match="at least 16"):
        console_auth({**env, "CHORUS_CONSOLE_SECRET": "short"}, address="127.0.0.1")


def test_no_auth_on_loopback_lets_a_local_user_in(
    stack_env: dict[str, str], log_dir: Path, workers: list[ManagedProcess]
) -> None:
    env = {k: v for k, v in stack_env.items() if not k.startswith("CHORUS_CONSOLE_")}
    process, url = start_console("console-noauth", env, log_dir, "--no-auth")
    try:
        assert Session(url).get("/api/reviews").status == 200
        assert "No auth (loopback only)" in Session(url).get("/").text
    finally:
        process.stop()


def test_behind_a_reverse_proxy_it_serves_under_a_prefix_with_secure_cookies(
    stack_env: dict[str, str], log_dir: Path, workers: list[ManagedProcess]
) -> None:
    env = {**stack_env, "CHORUS_CONSOLE_AUTH": f"{USER}:{PASSWORD}"}
    process, url = start_console(
        "console-proxied", env, log_dir, "--url-prefix", "/console/", "--proxy-headers"
    )
    try:
        session = Session(url)
        login = session.get("/console/")
        assert login.status == 401
        assert 'action="/console/login"' in login.text
        https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        form = {"user": USER, "password": PASSWORD, "_xsrf": session.xsrf(), "next": "/console/"}
        answer = session.post("/console/login", form, headers=https)
        assert (answer.status, answer.headers["location"]) == (303, "/console/")
        cookie = answer.headers["set-cookie"]
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
        assert "Path=/console/" in cookie
        assert Session(url).get("/console/api/tasks", auth=(USER, PASSWORD)).status == 200
        assert Session(url).get("/api/tasks", auth=(USER, PASSWORD)).status == 404
        assert "logged in from 203.0.113.7" in process.log_path.read_text()
    finally:
        process.stop()


# -- reviews and CSRF -----------------------------------------------------------------------------


def test_a_form_post_without_the_csrf_token_is_refused_and_changes_nothing(
    console: Console, dispatcher: Dispatcher, script_model: Script
) -> None:
    task_id = split_task(dispatcher, script_model)
    session = Session(console.url).login()
    decide = "/reviews/decide"
    attempts = {
        "no token": {"review_id": task_id, "decision": "approve"},
        "wrong token": {
            "review_id": task_id,
            "decision": "approve",
            "_xsrf": "2|deadbeef|" + "0" * 32 + "|1",
        },
    }
    for case, form in attempts.items():
        answer = session.post(decide, form)
        assert answer.status == 403, case
        assert "CSRF" in answer.text, case
    # A page of another site posting with a valid token is refused by the origin check.
    cross = session.post(
        decide,
        {"review_id": task_id, "decision": "approve", "_xsrf": session.xsrf()},
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    )
    assert cross.status == 403
    assert dispatcher.handle(task_id).status()["status"] == "needs_review"


def test_a_review_decision_is_taken_once_as_the_logged_in_user(
    console: Console,
    dispatcher: Dispatcher,
    script_model: Script,
    database_url: str,
) -> None:
    task_id = split_task(dispatcher, script_model)
    session = Session(console.url).login()
    queue = session.get("/api/reviews").json()["reviews"]
    [item] = [r for r in queue if r["task_id"] == task_id]
    assert "SPLIT" in item["summary"]
    assert [s["agent"] for s in item["steps"]].count("judge") == 1

    page = session.get("/reviews")
    assert f'id="review-{task_id}"' in page.text
    decide = "/reviews/decide"
    form = {
        "review_id": task_id,
        "decision": "approve",
        "note": "Budget owner agrees",
        "_xsrf": session.xsrf(),
    }
    answer = session.post(decide, form)
    assert answer.status == 303
    assert answer.headers["location"] == f"{task_path(task_id)}?decided=approved"

    status = dispatcher.handle(task_id).status()
    assert (status["status"], status["reviewer"]) == ("done", USER)
    assert status["review_note"] == "Budget owner agrees"

    again = session.post(decide, form)
    assert again.status == 409
    assert "already approved by you" in again.text
    other = Session(console.url).login(OTHER_USER, OTHER_PASSWORD)
    reject = {"review_id": task_id, "decision": "reject", "note": "No", "_xsrf": other.xsrf()}
    refused = other.post(decide, reject)
    assert refused.status == 409
    assert f"already approved by {USER}" in refused.text
    assert dispatcher.handle(task_id).status()["reviewer"] == USER

    # The audit trail records who decided.
    decided: list[dict[str, Any]] = []

    def audited() -> bool:
        store = AuditStore.existing(database_url)
        decided[:] = store.query(task_id=task_id, kind="review_decided") if store else []
        return bool(decided)

    wait_until(audited, timeout=30, what="the review decision in the audit trail")
    assert json.loads(decided[0]["detail"])["reviewer"] == USER
    assert task_id not in {r["task_id"] for r in session.get("/api/reviews").json()["reviews"]}


def test_a_rejection_needs_a_note(
    console: Console, dispatcher: Dispatcher, script_model: Script
) -> None:
    task_id = split_task(dispatcher, script_model)
    session = Session(console.url).login()
    session.get("/reviews")
    form = {"review_id": task_id, "decision": "reject", "_xsrf": session.xsrf()}
    answer = session.post("/reviews/decide", {**form, "note": " "})
    assert answer.status == 400
    assert "needs a note" in answer.text
    answer = session.post("/reviews/decide", {**form, "note": "Too risky"})
    assert answer.status == 303
    assert dispatcher.handle(task_id).status()["status"] == "rejected"


def test_a_tool_call_waiting_for_approval_is_reviewed_like_a_split(
    console: Console, app: Any, script_model: Script, tmp_path: Path
) -> None:
    """A step parked before a tool that needs approval (run in this process, as
    tests/test_approvals.py parks one) is listed with its pending call and decided once."""
    from tests.tool_fixtures import scout
    from workers.approvals import StepParked
    from workers.resume import approvals
    from workers.runner import Delivery, run_agent
    from workers.tools import tool_from_function

    def deliver(channel: str, text: str) -> str:
        """Post a text to a channel."""
        return f"posted to {channel}"

    spec, marker = scout(tool_from_function(deliver, requires_approval=True))
    call = {"name": "deliver", "input": {"channel": "blog", "text": "We launched"}}
    script_model(marker, [{"tool_calls": [call]}, {"tool_input": {"answer": "done"}}])
    runtime = app.runtime()
    root = AgentMessage.root(recipient=spec.name, payload={"text": "Announce the launch"})
    runtime.state.submit(root.task_id, pattern="route", root_message=root.to_dict())
    with pytest.raises(StepParked) as parked:
        run_agent(runtime, spec, root.to_dict(), Delivery())
    assert approvals(runtime).park(parked.value, resume=None)

    session = Session(console.url).login()
    [item] = [
        r
        for r in session.get("/api/reviews").json()["reviews"]
        if r["kind"] == "tool" and r["task_id"] == root.task_id
    ]
    assert item["review_id"] == f"{root.task_id}/{root.message_id}"
    assert [c["name"] for c in item["calls"]] == ["deliver"]
    assert '"channel": "blog"' in item["calls"][0]["input"]
    page = session.get("/reviews")
    assert "tool approval" in page.text
    assert f'data-review-id="{item["review_id"]}"' in page.text

    form = {"review_id": item["review_id"], "decision": "approve", "_xsrf": session.xsrf()}
    answer = session.post("/reviews/decide", form)
    assert answer.status == 303
    assert answer.headers["location"] == f"{task_path(root.task_id)}?decided=approved"
    again = session.post("/reviews/decide", form)
    assert again.status == 409
    assert "decided once" in again.text
    assert root.task_id not in {r["task_id"] for r in session.get("/api/reviews").json()["reviews"]}

    # The step resumes (here, in this process) and its page shows the tool loop.
    outcome = run_agent(runtime, spec, root.to_dict(), Delivery())
    assert outcome.message.message_type == "result", outcome.message.payload
    page = session.get(task_path(root.task_id))
    assert page.status == 200
    assert "Tool calls" in page.text
    assert "Model turns" in page.text
    assert "posted to blog" in page.text
    [step] = [
        r["step"] for r in session.get(f"/api/tasks/{root.task_id}").json()["rows"] if r["step"]
    ]
    assert [c["name"] for c in step["tool_calls"]] == ["deliver"]
    assert len(step["turns"]) == 2


# -- tasks: list, page, the audit trail -----------------------------------------------------------


def test_the_task_list_filters_by_status_workflow_and_agent_with_cost(
    console: Console, dispatcher: Dispatcher, script_model: Script
) -> None:
    task_id = split_task(dispatcher, script_model)
    session = Session(console.url).login()

    def listed(**query: str) -> dict[str, Any]:
        tasks = session.get("/api/tasks?" + urlencode(query)).json()["tasks"]
        return {t["task_id"]: t for t in tasks}

    row = listed(status="needs_review", workflow="consensus", agent="judge")[task_id]
    assert row["cost_micro_usd"] > 0
    assert row["steps"] == 4
    assert {"analyst", "judge"} <= set(row["agents"])
    assert row["source"] == "redis"
    assert task_id not in listed(status="done")
    assert task_id not in listed(workflow="pipeline")
    assert task_id not in listed(agent="drafter")
    page = session.get("/?" + urlencode({"status": "needs_review", "agent": "judge"}))
    assert f'data-task-id="{task_id}"' in page.text


def test_the_task_page_shows_each_step_with_model_tokens_cost_and_raw_output(
    console: Console, dispatcher: Dispatcher, script_model: Script
) -> None:
    task_id = split_task(dispatcher, script_model)
    session = Session(console.url).login()
    document = session.get(f"/api/tasks/{quote(task_id, safe='')}").json()
    steps = [row["step"] for row in document["rows"] if row["step"]]
    assert sorted(s["agent"] for s in steps) == ["analyst", "analyst", "analyst", "judge"]
    for step in steps:
        assert step["model"]
        assert step["input_tokens"] > 0
        assert step["cost_micro_usd"] > 0
        assert step["latency_ms"] > 0
        assert step["raw_output"]
    assert document["cost_micro_usd"] == sum(s["cost_micro_usd"] for s in steps)
    assert document["tree"][0]["message_id"] == document["rows"][0]["message_id"]  # = trace
    assert document["rows"][0]["depth"] == 0

    page = session.get(task_path(task_id))
    assert page.status == 200
    assert "Raw output" in page.text
    assert "SPLIT" in page.text
    live = session.get(f"/api/tasks/{quote(task_id, safe='')}/live").json()
    assert (live["status"], live["steps"], live["finished"]) == ("needs_review", 4, False)
    assert session.get("/tasks/no-such-task").status == 404


def test_a_task_redis_has_expired_is_read_from_the_audit_trail(
    console: Console, dispatcher: Dispatcher, database_url: str, app: Any
) -> None:
    handle = dispatcher.submit(
        unique("Summarize the archive"), pattern="pipeline", steps=["summarizer"]
    )
    assert handle.wait(60).status == "done"

    def archived() -> bool:
        store = AuditStore.existing(database_url)
        return bool(store and store.task_info(handle.task_id).get("status") == "done")

    wait_until(archived, timeout=30, what="the auditor to write the task to SQL")
    client = app.runtime().redis
    client.delete(*(f(handle.task_id) for f in (keys.task, keys.board, keys.trace)))

    session = Session(console.url).login()
    tasks = session.get("/api/tasks?workflow=pipeline&agent=summarizer").json()["tasks"]
    [row] = [t for t in tasks if t["task_id"] == handle.task_id]
    assert (row["source"], row["status"]) == ("sql", "done")
    document = session.get(f"/api/tasks/{quote(handle.task_id, safe='')}").json()
    assert [row["step"]["agent"] for row in document["rows"] if row["step"]] == ["summarizer"]


# -- dead letters ---------------------------------------------------------------------------------


def test_a_dead_letter_is_listed_and_retried_once_from_the_console(
    console: Console, dispatcher: Dispatcher, script_model: Script
) -> None:
    text = unique("Summarize the flaky dependency report")
    script_model(text, [{"text": "not json"}, {"text": "still not json"}])
    handle = dispatcher.submit(text, pattern="pipeline", steps=["summarizer"])
    assert handle.wait(60).message.payload["code"] == "invalid_output"

    session = Session(console.url).login()
    letters = session.get("/api/deadletters").json()["dead_letters"]
    [letter] = [d for d in letters if d["task_id"] == handle.task_id]
    assert (letter["code"], letter["retryable"]) == ("invalid_output", True)
    page = session.get("/deadletters")
    assert f'data-letter-id="{letter["id"]}"' in page.text

    retry = f"/deadletters/{letter['id']}/retry"
    answer = session.post(retry, {"_xsrf": session.xsrf()})
    assert answer.status == 303
    assert f"retried={letter['id']}" in answer.headers["location"]
    wait_until(lambda: handle.status().get("status") == "done", timeout=60, what="the retry")
    assert [s.status for s in handle.trace()] == ["error", "ok"]

    again = session.post(retry, {"_xsrf": session.xsrf()})
    assert again.status == 409
    assert "already retried" in again.text
    assert session.post(retry, {}).status == 403  # and a form without its token, never


# -- in a real browser ----------------------------------------------------------------------------


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--no-proxy-server"],
        )
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def artifact_dir(tmp_path: Path) -> Path:
    """CHORUS_TEST_ARTIFACTS if set (CI keeps it), else the test's own tmp directory."""
    chosen = os.environ.get("CHORUS_TEST_ARTIFACTS")
    directory = Path(chosen) if chosen else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def log_in(page: Any, url: str) -> None:
    response = page.goto(url + "/")
    assert response.status == 401
    page.fill("input[name=user]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#user")


@needs_chromium
def test_a_reviewer_approves_a_split_consensus_in_the_browser(
    console: Console,
    dispatcher: Dispatcher,
    script_model: Script,
    browser_page: Any,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    task_id = split_task(dispatcher, script_model)
    page = browser_page
    log_in(page, console.url)

    page.click("text=Review queue")
    review = page.locator(f"article[data-task-id='{task_id}']")
    assert "SPLIT" in review.inner_text()
    review.locator("textarea[name=note]").fill("Budget owner agrees")
    review.locator("button[value=approve]").click()

    page.wait_for_url(f"**{task_path(task_id)}?decided=approved")
    assert page.inner_text("#decided") == "You approved this task."
    assert page.inner_text("#task-status") == "done"
    assert f"approved by {USER}" in page.inner_text("#review-outcome")
    status = dispatcher.handle(task_id).status()
    assert (status["status"], status["reviewer"]) == ("done", USER)

    for details in page.locator("li.node details").all()[-1:]:
        details.locator("summary").click()  # the judge's step, opened, for the screenshot
    shot = artifact_dir(tmp_path) / "console-task-page.png"
    page.screenshot(path=str(shot), full_page=True)
    record_property("screenshot", str(shot))
    print(f"console task page screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert PASSWORD not in page.content()


@needs_chromium
def test_the_task_page_updates_live_when_the_task_changes(
    console: Console, dispatcher: Dispatcher, script_model: Script, browser_page: Any
) -> None:
    task_id = split_task(dispatcher, script_model)
    page = browser_page
    log_in(page, console.url)
    page.goto(console.url + task_path(task_id))
    assert page.inner_text("#task-status") == "needs_review"

    dispatcher.reviews.approve(task_id, note="decided in the terminal", reviewer="terminal-user")

    page.wait_for_function(
        "document.getElementById('task-status').textContent === 'done'", timeout=30_000
    )
    assert "approved by terminal-user" in page.inner_text("#review-outcome")
    assert page.url == console.url + task_path(task_id)  # no reload, no navigation
