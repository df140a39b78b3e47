"""The audit watch: every Chorus worker warns in its log while nothing drains the audit
stream, so a missing `chorus auditor` is noticed before Redis trims unwritten events.

A module of its own because it is a Celery bootstep: the audit stream itself is written by
producers and read by `chorus status`, which must not import Celery.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery import bootsteps

from workers.audit_events import undrained

log = logging.getLogger(__name__)


class AuditWatchThread(threading.Thread):
    """Checks every `interval` seconds and logs a warning each time the stream is undrained."""

    def __init__(self, client: redis.Redis, interval: float) -> None:
        super().__init__(name="chorus-audit-watch", daemon=True)
        self.client = client
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.check()

    def check(self, now: float | None = None) -> None:
        """One look; a warning in the log if the stream is undrained."""
        try:
            warning = undrained(self.client, older_than=self.interval, now=now)
        except redis.RedisError as exc:  # Redis restarting: the next look tries again
            log.info("audit stream check skipped: %s", exc)
            return
        if warning:
            log.warning(warning)


class AuditWatchStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the watch inside every Chorus worker (CHORUS_AUDIT_WARN_SECONDS; 0 switches off)."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: AuditWatchThread | None = None

    def start(self, worker: Any) -> None:
        settings = worker.app.settings
        interval = float(settings.audit_warn_seconds)
        if not settings.audit or interval <= 0:
            return
        self.thread = AuditWatchThread(worker.app.runtime().redis, interval)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stopped.set()
