"""Log in (a form that sets the signed session cookie), log out, and the health check."""

from __future__ import annotations

from http import HTTPStatus

from dispatcher.console.base import SESSION_COOKIE, SESSION_DAYS, BaseHandler, log


class LoginHandler(BaseHandler):
    public = True

    def get(self) -> None:
        self.render("login.html", error=None, next_url=self._next_url())

    def post(self) -> None:
        user = self.get_body_argument("user", "")
        password = self.get_body_argument("password", "")
        if not self.context.auth.check(user, password):
            log.warning("console: failed login for %r from %s", user[:64], self.request.remote_ip)
            self.set_status(HTTPStatus.UNAUTHORIZED)
            self.render(
                "login.html", error="Wrong user name or password.", next_url=self._next_url()
            )
            return
        self.set_signed_cookie(
            SESSION_COOKIE,
            self.context.auth.session_value(user),
            expires_days=SESSION_DAYS,
            httponly=True,
            samesite="Lax",
            secure=self.request.protocol == "https",
            path=self.url("/") if self.context.prefix else "/",
        )
        log.info("console: %s logged in from %s", user, self.request.remote_ip)
        self.redirect(self._next_url(), status=HTTPStatus.SEE_OTHER)

    def _next_url(self) -> str:
        """Only a path of this console: a login must not send anyone to another site."""
        wanted = self.get_argument("next", "")
        inside = wanted.startswith(self.url("/")) and not wanted.startswith("//")
        return wanted if inside and "\\" not in wanted else self.url("/")


class LogoutHandler(BaseHandler):
    public = True

    def post(self) -> None:
        self.clear_cookie(SESSION_COOKIE, path=self.url("/") if self.context.prefix else "/")
        self.redirect(self.url("/login"), status=HTTPStatus.SEE_OTHER)


class HealthHandler(BaseHandler):
    """For load balancers and Kubernetes probes; says nothing about tasks."""

    public = True

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.finish("ok\n")
