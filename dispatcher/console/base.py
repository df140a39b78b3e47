"""The request handler every console page and API call derives from: who is asking, and the
one way to refuse them (401), to run blocking work off the event loop, and to show an error.

A request is authenticated by the signed session cookie the login form sets, or by HTTP basic
auth (for scripts). Without either, an API call gets a JSON 401 and a page gets a 401 whose
body is the login form, so `GET /` answers 401 and a browser still sees where to log in.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import tornado.web
from tornado.ioloop import IOLoop

from dispatcher.console.auth import LOCAL_USER, ConsoleAuth
from dispatcher.console.data import ConsoleData
from dispatcher.render import usd

SESSION_COOKIE = "chorus_console_session"
SESSION_DAYS = 1.0
log = logging.getLogger("chorus.console")
T = TypeVar("T")


@dataclass(frozen=True)
class ConsoleContext:
    """What every handler is given: the data layer, who may log in, where the console lives."""

    data: ConsoleData
    auth: ConsoleAuth
    executor: ThreadPoolExecutor
    prefix: str = ""
    """The path the console is served under ('' or e.g. '/console'), for a reverse proxy."""


class BaseHandler(tornado.web.RequestHandler):
    """Authenticated by default: set `public = True` on a handler anyone may reach."""

    public = False
    context: ConsoleContext

    def initialize(self, context: ConsoleContext) -> None:
        self.context = context

    # -- who is asking ------------------------------------------------------------------------

    def get_current_user(self) -> str | None:
        auth = self.context.auth
        if not auth.enabled:
            return LOCAL_USER
        user = self._basic_auth_user()
        if user:
            return user
        cookie = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        return auth.session_user(cookie.decode()) if cookie else None

    def _basic_auth_user(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            user, sep, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if sep and self.context.auth.check(user, password) else None

    @property
    def is_api(self) -> bool:
        return self.request.path.startswith(f"{self.context.prefix}/api/")

    def prepare(self) -> None:
        if self.public or self.current_user:
            return
        self.set_status(HTTPStatus.UNAUTHORIZED)
        if self.is_api:
            self.set_header("WWW-Authenticate", 'Basic realm="chorus console"')
            self.finish({"error": "authentication required: log in, or send HTTP basic auth"})
        else:
            self.render("login.html", error=None, next_url=self.request.uri or self.url("/"))

    # -- helpers for handlers -----------------------------------------------------------------

    def url(self, path: str) -> str:
        """A console path under the prefix the console is served at."""
        return f"{self.context.prefix}{path}"

    async def blocking(self, work: Callable[..., T], *args: Any) -> T:
        """Run Redis and SQL calls on the thread pool, so one slow read blocks no other page."""
        return await IOLoop.current().run_in_executor(self.context.executor, work, *args)

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(url=self.url, usd=usd, auth_enabled=self.context.auth.enabled)
        return namespace

    def show_message(self, status: int, title: str, text: str, back: str | None = None) -> None:
        self.set_status(status)
        if self.is_api:
            self.finish({"error": text})
            return
        self.render("message.html", title=title, text=text, back=back or self.url("/"))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == HTTPStatus.FORBIDDEN and isinstance(error, tornado.web.HTTPError):
            text = (
                "The form did not carry this console's CSRF token (it expired, or it did not "
                "come from a console page). Nothing was changed: reload the page and try again."
            )
            self.show_message(status_code, "Refused", text)
            return
        try:
            reason = HTTPStatus(status_code).phrase
        except ValueError:
            reason = "Error"
        self.show_message(status_code, reason, f"{status_code} {reason}")
