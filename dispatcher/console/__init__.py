"""`chorus console`: a web application for the people who review and operate.

Tasks (live from Redis, older ones from the SQL audit trail) with their cost, each task's message
tree updating while it runs, the review queue (approve or reject with a note, as the logged-in
user), and dead letters with retry. Auth follows `chorus flower`'s rules (see auth.py).

This module only declares the command: the server (tornado, the app's Celery config) is
imported when the command runs, so `chorus --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_PORT = 5556
DEFAULT_ADDRESS = "127.0.0.1"


def add_commands(sub: Any) -> None:
    console = sub.add_parser(
        "console", help="web console: tasks, traces, review queue, dead letters (behind auth)"
    )
    console.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    console.add_argument(
        "--address", default=DEFAULT_ADDRESS, help=f"bind address (default {DEFAULT_ADDRESS})"
    )
    console.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        help="else CHORUS_CONSOLE_AUTH; required (comma-separated pairs for several users)",
    )
    console.add_argument(
        "--no-auth", action="store_true", help="no auth at all; only with a loopback --address"
    )
    console.add_argument(
        "--url-prefix", default="", help="serve under this path, e.g. /console (reverse proxy)"
    )
    console.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For/-Proto (only behind a reverse proxy that sets them)",
    )
    console.set_defaults(handler=cmd_console)


def cmd_console(args: argparse.Namespace) -> int:
    from dispatcher.console.auth import console_auth, describe
    from dispatcher.console.data import ConsoleData
    from dispatcher.dispatcher import Dispatcher
    from workers.app import create_app
    from workers.settings import Settings

    auth = console_auth(
        os.environ, address=args.address, basic_auth=args.basic_auth, no_auth=args.no_auth
    )
    from dispatcher.console.app import normalise_prefix, serve

    host = f"[{args.address}]" if ":" in args.address else (args.address or "0.0.0.0")
    url = f"http://{host}:{args.port}{normalise_prefix(args.url_prefix)}/"
    data = ConsoleData(Dispatcher(create_app(Settings.from_env())))
    serve(
        data,
        auth,
        port=args.port,
        address=args.address,
        prefix=args.url_prefix,
        proxy_headers=args.proxy_headers,
        announce=describe(auth, url),
    )
    return 0
