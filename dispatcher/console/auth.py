"""Who may use `chorus console`: the same rules as `chorus flower`, plus a signed session cookie.

Credentials come from `--basic-auth USER:PASSWORD[,USER:PASSWORD...]` or CHORUS_CONSOLE_AUTH;
auth is off only with an explicit `--no-auth` on a loopback address. A browser logs in through
a form and then carries a cookie signed with CHORUS_CONSOLE_SECRET (or a secret made at start,
so sessions end with the process); scripts may send HTTP basic auth instead. The cookie holds
the user name and a fingerprint of the password, so changing a password ends its sessions.
Passwords are never printed or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from dispatcher.flower import is_loopback
from messages import ChorusError

AUTH_ENV = "CHORUS_CONSOLE_AUTH"
SECRET_ENV = "CHORUS_CONSOLE_SECRET"
LOCAL_USER = "local"
"""The reviewer recorded when auth is off (`--no-auth`, loopback only)."""
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class ConsoleAuth:
    """The console's users and the key its session cookies are signed with."""

    users: Mapping[str, str] = field(repr=False)
    """User name -> password; empty when auth is off."""
    cookie_secret: str = field(repr=False)
    secret_generated: bool = False
    """No CHORUS_CONSOLE_SECRET was given: sessions end when the process does."""

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    @property
    def user_names(self) -> list[str]:
        return sorted(self.users)

    def check(self, user: str, password: str) -> bool:
        """Constant-time in the password, whatever user name is tried."""
        expected = self.users.get(user, "")
        matches = hmac.compare_digest(password.encode(), expected.encode())
        return bool(expected) and matches

    def session_value(self, user: str) -> str:
        """What the signed cookie carries for `user`: name and password fingerprint."""
        return f"{user}:{self._fingerprint(user)}"

    def session_user(self, value: str) -> str | None:
        """The user a cookie value names, if that user still has the same password."""
        user, sep, fingerprint = value.rpartition(":")
        if not sep or user not in self.users:
            return None
        return user if hmac.compare_digest(fingerprint, self._fingerprint(user)) else None

    def _fingerprint(self, user: str) -> str:
        key = self.cookie_secret.encode()
        message = f"{user}\x00{self.users.get(user, '')}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def parse_credentials(value: str) -> dict[str, str]:
    """Flower's format, `user:password[,user:password...]` (a password may hold ':')."""
    users: dict[str, str] = {}
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise ChorusError(
                "basic auth needs user:password (comma-separated pairs for several users; "
                "a password cannot contain a comma)"
            )
        users[user] = password
    return users


def console_auth(
    env: Mapping[str, str],
    *,
    address: str,
    basic_auth: str | None = None,
    no_auth: bool = False,
) -> ConsoleAuth:
    """Decide the console's auth; refuses to run open unless asked to, on loopback only."""
    secret = env.get(SECRET_ENV, "")
    if secret and len(secret) < MIN_SECRET_LENGTH:
        raise ChorusError(f"{SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters")
    generated = not secret
    secret = secret or secrets.token_hex(32)
    if no_auth:
        if basic_auth:
            raise ChorusError("--no-auth and --basic-auth contradict each other; pick one")
        if not is_loopback(address):
            raise ChorusError(
                f"refusing to run the console without auth on {address or 'every interface'}: "
                "--no-auth is only allowed with a loopback --address (127.0.0.1, localhost, ::1)"
            )
        return ConsoleAuth({}, secret, generated)
    credentials = basic_auth or env.get(AUTH_ENV, "")
    if not credentials:
        raise ChorusError(
            f"the console needs credentials: pass --basic-auth USER:PASSWORD or set {AUTH_ENV} "
            "(or --no-auth with --address 127.0.0.1 for a local look)"
        )
    return ConsoleAuth(parse_credentials(credentials), secret, generated)


def describe(auth: ConsoleAuth, url: str) -> str:
    """One line for the operator; names the users, never a password."""
    if not auth.enabled:
        return f"console: {url} (NO auth, loopback only)"
    sessions = (
        f"sessions end at exit (set {SECRET_ENV} to keep them)" if auth.secret_generated else ""
    )
    tail = f"; {sessions}" if sessions else ""
    return f"console: {url} (login as {', '.join(auth.user_names)}{tail})"
