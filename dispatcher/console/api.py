"""The console's JSON API (read-only): what the pages poll, and what a script may read.

Actions stay forms (pages.py) so every state change carries the CSRF token.
"""

from __future__ import annotations

from dataclasses import asdict
from http import HTTPStatus

from dispatcher.console.base import BaseHandler
from dispatcher.console.pages import task_filter


class TasksApi(BaseHandler):
    async def get(self) -> None:
        limit = min(int(self.get_argument("limit", "200") or 200), 1000)
        rows = await self.blocking(lambda: self.context.data.tasks(task_filter(self), limit=limit))
        self.finish({"tasks": [row.document() for row in rows]})


class TaskApi(BaseHandler):
    async def get(self, task_id: str) -> None:
        document = await self.blocking(self.context.data.task, task_id)
        if document is None:
            self.show_message(HTTPStatus.NOT_FOUND, "No such task", f"no task {task_id}")
            return
        self.finish(document)


class TaskLiveApi(BaseHandler):
    """Status and a version string; the task page fetches its body again when it changes."""

    async def get(self, task_id: str) -> None:
        live = await self.blocking(self.context.data.live, task_id)
        if live is None:
            self.show_message(HTTPStatus.NOT_FOUND, "No such task", f"no task {task_id}")
            return
        self.set_header("Cache-Control", "no-store")
        self.finish(live)


class ReviewsApi(BaseHandler):
    async def get(self) -> None:
        items = await self.blocking(self.context.data.reviews)
        self.finish({"reviews": [asdict(item) for item in items]})


class DeadLettersApi(BaseHandler):
    async def get(self) -> None:
        letters = await self.blocking(self.context.data.dead_letters)
        self.finish({"dead_letters": [letter.document() for letter in letters]})
