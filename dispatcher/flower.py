"""`chorus flower`: Flower on the project's Celery app, behind basic auth.

Runs `python -m celery -A workers.app flower` with the Chorus settings' broker, so Flower sees
the same queues (priority sub-lists summed, which needs `-A`) and the task events that workers
and producers send (`task_send_sent_event` in `workers/app.py`; workers send task events while
Flower runs: it switches them on with Celery's `enable_events` every 5 s, and `chorus flower`
asks once at start).

Credentials travel to Flower in its environment (`FLOWER_BASIC_AUTH`), never on its command
line, where any local user could read them with `ps`; the password is never printed.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from messages import ChorusError
from workers.settings import Settings

DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"
AUTH_ENV = "FLOWER_BASIC_AUTH"
UNAUTHENTICATED_ENV = "FLOWER_UNAUTHENTICATED_API"


@dataclass(frozen=True)
class FlowerCommand:
    """What to execute: the argv and the complete environment of the Flower process."""

    argv: list[str]
    """`python -m celery -A workers.app flower --port=... --address=...`; no secrets."""
    env: dict[str, str]
    """The caller's environment plus the broker URL and the auth settings."""
    users: list[str]
    """User names allowed in (empty when auth is off); safe to print."""
    url: str
    """Where the dashboard answers, without credentials."""


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def parse_basic_auth(value: str) -> list[str]:
    """Flower's format, `user:password[,user:password...]`; returns the user names."""
    users = []
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise ChorusError(
                "basic auth needs user:password (comma-separated pairs for several users; "
                "a password cannot contain a comma)"
            )
        users.append(user)
    return users


def flower_command(
    env: Mapping[str, str],
    *,
    port: int = DEFAULT_PORT,
    address: str = DEFAULT_ADDRESS,
    basic_auth: str | None = None,
    no_auth: bool = False,
) -> FlowerCommand:
    """Build the Flower command; refuses to run without auth unless asked to, on loopback only.

    `basic_auth` wins over `FLOWER_BASIC_AUTH` in `env`. With `no_auth` the API is opened
    (`FLOWER_UNAUTHENTICATED_API=true`), which is allowed only on a loopback address.
    """
    child = dict(env)
    # Flower reads every FLOWER_* variable; auth is decided here and nowhere else.
    child.pop(AUTH_ENV, None)
    child.pop(UNAUTHENTICATED_ENV, None)
    if no_auth:
        if basic_auth:
            raise ChorusError("--no-auth and --basic-auth contradict each other; pick one")
        if not is_loopback(address):
            raise ChorusError(
                f"refusing to run Flower without auth on {address or 'every interface'}: "
                "--no-auth is only allowed with a loopback --address (127.0.0.1, localhost, ::1)"
            )
        child[UNAUTHENTICATED_ENV] = "true"
        users: list[str] = []
    else:
        credentials = basic_auth or env.get(AUTH_ENV, "")
        if not credentials:
            raise ChorusError(
                f"Flower needs basic auth: pass --basic-auth USER:PASSWORD or set {AUTH_ENV} "
                "(or --no-auth with --address 127.0.0.1 for a local look)"
            )
        users = parse_basic_auth(credentials)
        child[AUTH_ENV] = credentials
    # The broker of the Chorus settings, for Flower's broker connection and queue lengths;
    # CELERY_BROKER_URL is what `celery --broker` sets, kept off the command line (it may
    # carry the Redis password).
    child["CELERY_BROKER_URL"] = Settings.from_env(env).redis_url
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    host = f"[{address}]" if ":" in address else (address or "0.0.0.0")
    return FlowerCommand(argv=argv, env=child, users=users, url=f"http://{host}:{port}/")


def describe(command: FlowerCommand) -> str:
    """One line for the operator; names the users, never a password."""
    if command.users:
        access = f"basic auth for {', '.join(command.users)}"
    else:
        access = "NO auth (loopback only)"
    return f"flower: {command.url} ({access}); broker from CHORUS_REDIS_URL"


def enable_task_events(settings: Settings) -> None:
    """Ask the running workers for task events now; Flower itself first asks after 5 s.

    Workers send task events only while someone watches (CHORUS_TASK_EVENTS), so without
    this the first seconds of tasks would be missing from the dashboard.
    """
    from workers.app import create_app

    app = create_app(settings)
    try:
        app.control.enable_events()
    except Exception as exc:  # Flower retries every 5 s; a broker hiccup here is not fatal
        reason = type(exc).__name__
        print(f"flower: could not ask workers for task events yet ({reason})", file=sys.stderr)
    finally:
        app.close()


def exec_flower(command: FlowerCommand) -> None:
    """Replace this process with Flower, so signals (SIGTERM from a supervisor) reach it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command.argv[0], command.argv, command.env)
