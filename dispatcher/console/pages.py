"""The console's HTML pages and its two forms (a review decision, a dead-letter retry).

Forms post with tornado's `_xsrf` token (the application sets xsrf_cookies) and answer with a
303 to the page that shows the result, so a reload never posts twice.
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import quote, urlencode

from dispatcher.console.base import BaseHandler, log
from dispatcher.console.data import DecisionRefused
from dispatcher.console.task_index import TaskFilter
from messages import ChorusError
from messages.status import TaskStatus
from workers.approvals import SEPARATOR


def task_filter(handler: BaseHandler) -> TaskFilter:
    return TaskFilter(
        status=handler.get_argument("status", "") or None,
        workflow=handler.get_argument("workflow", "") or None,
        agent=handler.get_argument("agent", "") or None,
    )


class TasksPage(BaseHandler):
    async def get(self) -> None:
        wanted = task_filter(self)
        rows = await self.blocking(self.context.data.tasks, wanted)
        query = urlencode({k: v for k, v in vars(wanted).items() if v})
        self.render(
            "tasks.html",
            rows=rows,
            wanted=wanted,
            statuses=[s.value for s in TaskStatus],
            api_url=self.url("/api/tasks") + (f"?{query}" if query else ""),
        )


class TaskPage(BaseHandler):
    async def get(self, task_id: str) -> None:
        document = await self.blocking(self.context.data.task, task_id)
        if document is None:
            self.show_message(
                HTTPStatus.NOT_FOUND,
                "No such task",
                f"No task {task_id} in Redis or the audit trail.",
            )
            return
        template = "task_body.html" if self.get_argument("fragment", "") else "task.html"
        self.render(
            template,
            task=document,
            decided=self.get_argument("decided", ""),
            live_url=self.url(f"/api/tasks/{quote(task_id, safe='')}/live"),
            fragment_url=self.url(f"/tasks/{quote(task_id, safe='')}?fragment=1"),
        )


class ReviewsPage(BaseHandler):
    async def get(self) -> None:
        items = await self.blocking(self.context.data.reviews)
        self.render("reviews.html", items=items)


class DecideHandler(BaseHandler):
    """POST review_id, decision (approve or reject) and note; the reviewer is who is logged in."""

    async def post(self) -> None:
        review_id = self.get_body_argument("review_id", "")
        decision = self.get_body_argument("decision", "")
        if not review_id or decision not in ("approve", "reject"):
            self.show_message(HTTPStatus.BAD_REQUEST, "Refused", "Choose approve or reject.")
            return
        note = self.get_body_argument("note", "").strip()
        reviewer = str(self.current_user)
        task_id = review_id.split(SEPARATOR, 1)[0]
        back = self.url(f"/tasks/{quote(task_id, safe='')}")
        try:
            await self.blocking(
                lambda: self.context.data.decide(
                    review_id, approve=decision == "approve", note=note, reviewer=reviewer
                )
            )
        except DecisionRefused as refused:
            status = HTTPStatus.CONFLICT if refused.conflict else HTTPStatus.BAD_REQUEST
            self.show_message(status, "Decision refused", str(refused), back)
            return
        log.info("console: %s %sd review %s", reviewer, decision, review_id)
        outcome = "approved" if decision == "approve" else "rejected"
        self.redirect(f"{back}?decided={outcome}", status=HTTPStatus.SEE_OTHER)


class DeadLettersPage(BaseHandler):
    async def get(self) -> None:
        letters = await self.blocking(self.context.data.dead_letters)
        self.render(
            "deadletters.html",
            letters=letters,
            retried=self.get_argument("retried", ""),
            retried_as=self.get_argument("as", ""),
        )


class RetryHandler(BaseHandler):
    async def post(self, letter_id: str) -> None:
        back = self.url("/deadletters")
        try:
            again = await self.blocking(self.context.data.retry, letter_id)
        except ChorusError as exc:
            self.show_message(HTTPStatus.CONFLICT, "Retry refused", str(exc), back)
            return
        log.info(
            "console: %s retried dead letter %s as %s",
            self.current_user,
            letter_id,
            again.message_id,
        )
        query = urlencode({"retried": letter_id, "as": again.message_id})
        self.redirect(f"{back}?{query}", status=HTTPStatus.SEE_OTHER)
