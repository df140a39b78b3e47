"""The console's tornado application and the `chorus console` server loop.

Tornado, as Flower uses: server-rendered templates (autoescaped), static files, no build step.
Forms are protected twice: tornado's `_xsrf` token (xsrf_cookies) and its cross-origin check
of state-changing requests (cross_origin_protection: Sec-Fetch-Site / Origin).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web

from dispatcher.console import api, login, pages
from dispatcher.console.auth import ConsoleAuth
from dispatcher.console.base import ConsoleContext
from dispatcher.console.data import ConsoleData

HERE = Path(__file__).resolve().parent
TASK_ID = r"([^/]+)"


def make_app(context: ConsoleContext) -> tornado.web.Application:
    prefix = context.prefix
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        ("/", pages.TasksPage),
        ("/tasks", pages.TasksPage),
        (f"/tasks/{TASK_ID}", pages.TaskPage),
        ("/reviews", pages.ReviewsPage),
        ("/reviews/decide", pages.DecideHandler),
        ("/deadletters", pages.DeadLettersPage),
        (r"/deadletters/([0-9]+-[0-9]+)/retry", pages.RetryHandler),
        ("/login", login.LoginHandler),
        ("/logout", login.LogoutHandler),
        ("/healthz", login.HealthHandler),
        ("/api/tasks", api.TasksApi),
        (f"/api/tasks/{TASK_ID}", api.TaskApi),
        (f"/api/tasks/{TASK_ID}/live", api.TaskLiveApi),
        ("/api/reviews", api.ReviewsApi),
        ("/api/deadletters", api.DeadLettersApi),
    ]
    handlers: list[Any] = [
        tornado.web.url(prefix + path, handler, {"context": context}) for path, handler in routes
    ]
    if prefix:
        handlers.append((prefix, tornado.web.RedirectHandler, {"url": prefix + "/"}))
        # Probes keep their path whatever prefix a proxy serves the console under.
        handlers.append(tornado.web.url("/healthz", login.HealthHandler, {"context": context}))
    return tornado.web.Application(
        handlers,
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        static_url_prefix=f"{prefix}/static/",
        cookie_secret=context.auth.cookie_secret,
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict", "path": prefix or "/"},
        cross_origin_protection=True,
        autoescape="xhtml_escape",
        compress_response=True,
    )


def normalise_prefix(prefix: str) -> str:
    """'/console/' or 'console' -> '/console'; '' or '/' -> ''."""
    stripped = prefix.strip().strip("/")
    return f"/{stripped}" if stripped else ""


def serve(
    data: ConsoleData,
    auth: ConsoleAuth,
    *,
    port: int,
    address: str,
    prefix: str = "",
    proxy_headers: bool = False,
    announce: str = "",
) -> None:
    """Serve until SIGTERM or SIGINT; `proxy_headers` trusts X-Forwarded-For/-Proto (set it
    only behind a reverse proxy that sets them, so cookies know the request was https)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="console")
        context = ConsoleContext(data, auth, executor, normalise_prefix(prefix))
        server = tornado.httpserver.HTTPServer(make_app(context), xheaders=proxy_headers)
        server.listen(port, address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if announce:
            print(announce, file=sys.stderr, flush=True)
        await stop.wait()
        server.stop()
        await server.close_all_connections()
        executor.shutdown(wait=False, cancel_futures=True)

    asyncio.run(main())
