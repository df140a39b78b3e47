"""The Celery app: one queue per agent, JSON only, late acks, prefetch 1, threads pool.

`celery -A workers.app worker -Q agent.research` works as well as `chorus worker research`.
Settings are read when the app is first configured, not at import time.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from kombu.entity import Queue

from workers import audit_watch, results, telemetry, tool_listing, transit
from workers.broker_options import celery_options, sentinel_options, wait_options
from workers.loading import load_app
from workers.registry import PRIORITY_LEVELS, Team
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tasks import register_agent_tasks

DEFAULT_QUEUE = "chorus.default"
"""Where a task without a route would go; no agent consumes it, so such a task shows up."""


def celery_config(settings: Settings, team: Team) -> dict[str, Any]:
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        # Look for messages of dead workers every 5 s (kombu's default is about every 100 s):
        # recovery after a crash then takes visibility_timeout + at most 5 s.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        # A worker killed while holding the restore lock would block restores for the
        # default 300 s; a restore pass takes milliseconds.
        "unacked_mutex_expire": 15,
        # sentinel:// URLs: the master's name and how to reach the Sentinels (none otherwise).
        **sentinel_options(settings),
    }
    return {
        "broker_url": settings.redis_url,
        # Chorus's kombu transport (the transit ledger, closed-channel guards): selected here,
        # so nothing in kombu is patched and other connections in the process stay plain.
        **celery_options(settings.redis_url),
        # Celery's Redis backend whose connections wait out a Redis restart (workers/results.py).
        "result_backend": results.backend_url(settings.redis_url),
        # JSON only: pickle would let whoever can write to Redis run code on the workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # At-least-once: a message is acknowledged after the agent finished, and a worker that
        # dies mid-call gives its messages back. Side effects are keyed by message_id.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_transport_options": {**transport, **wait_options(settings)},
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout,
        "broker_connection_retry_on_startup": True,
        # Ride out a Redis restart: a hand-off published while Redis is down waits for it
        # (Celery's default gives up after ~1 s and the step's message would be lost) ...
        "task_publish_retry_policy": {
            "max_retries": max(1, int(settings.redis_outage_seconds)),
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 1,
        },
        # ... and so does storing a task's result.
        "result_backend_always_retry": True,
        "result_backend_max_retries": max(1, int(settings.redis_outage_seconds)),
        "result_backend_max_sleep_between_retries_ms": 1000,
        "task_queues": [
            Queue(spec.queue, routing_key=spec.queue)  # type: ignore[no-untyped-call]
            for spec in team.agents.values()
        ]
        + [Queue(DEFAULT_QUEUE, routing_key=DEFAULT_QUEUE)],  # type: ignore[no-untyped-call]
        "task_routes": {spec.task_name: {"queue": spec.queue} for spec in team.agents.values()},
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_priority": PRIORITY_LEVELS["normal"],
        "task_create_missing_queues": False,
        "result_expires": settings.state_ttl,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": True,
        # No STARTED result writes: nothing reads them (Flower has the task-started event, the
        # producer's progress comes from the task hash), and each costs a write and a publish.
    }


class ChorusApp(Celery):  # type: ignore[misc]
    """A Celery app that knows its team and owns the process's Chorus runtime.

    `chorus.App` is this class with the declaration API; `celery -A module worker` finds it
    like any Celery app.
    """

    def __init__(
        self, main: str = "chorus", *, settings: Settings | None = None, team: Team | None = None
    ) -> None:
        super().__init__(main)
        self.amqp_cls = "workers.transport:AMQP"  # URLs name their scheme (Flower needs it)
        self.team = team if team is not None else Team(main)
        self._chorus_settings = settings
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()
        self.add_defaults(self._chorus_config)
        register_agent_tasks(self)
        telemetry.install()  # OpenTelemetry, only when the OTEL_* variables ask for it
        self.steps["worker"].update(
            (transit.ReaperStep, audit_watch.AuditWatchStep, tool_listing.ToolListingStep)
        )

    @property
    def settings(self) -> Settings:
        if self._chorus_settings is None:
            self._chorus_settings = Settings.from_env()
        return self._chorus_settings

    def runtime(self) -> Runtime:
        """This process's runtime, created on first use (so after a prefork worker forks)."""
        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = Runtime(self.settings)
            return self._runtime

    def validate(self) -> None:
        """Checks that make a broken team fail when it loads (chorus.App has them)."""

    def _chorus_config(self) -> dict[str, Any]:
        # Celery reads this on the first look at its configuration (a worker starting, a
        # producer publishing), so a broken team fails there, before any message.
        self.validate()
        return celery_config(self.settings, self.team)

    def using(self, settings: Settings) -> ChorusApp:
        """The same team over other settings (another Redis, another simulator)."""
        return ChorusApp(self.main, settings=settings, team=self.team)


def create_app(settings: Settings | None = None) -> ChorusApp:
    """The loaded app (CHORUS_APP, else the seed team), over `settings` when given."""
    app = load_app()
    return app if settings is None else app.using(settings)


def __getattr__(name: str) -> Any:
    # `celery -A workers.app` asks for `workers.app.app`: the loaded app, built on first use
    # (importing this module must not import a user's team, which imports this module).
    if name == "app":
        return load_app()
    raise AttributeError(name)
