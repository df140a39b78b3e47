"""A fleet under test: its own Redis (append-only, so it can restart), one worker process per agent
type, and the broker's view of what is in flight. Shared by the chaos and replay tests.

Every wait here is on state (Redis keys, process exits, log lines), never a fixed sleep.
"""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from redis import Redis

from dispatcher import Dispatcher
from dispatcher.embedded import ManagedProcess, start_redis, start_worker, stop_all, wait_until
from workers import keys
from workers.app import create_app
from workers.registry import get_agent
from workers.settings import Settings

UNACKED = "unacked"
"""kombu's hash of delivered, unacknowledged messages: delivery tag -> [message, exchange, key]."""
UNACKED_INDEX = "unacked_index"
PRIORITY_SEP = "\x06\x16"
"""kombu keeps priority p of queue q in the list `q` (p = 0) or `q\\x06\\x16p`."""
RESTART_NOTICE = "Connection to broker lost"
"""What a Celery worker logs when its broker connection drops (a Redis restart)."""


def queue_of(agent: str) -> str:
    return str(get_agent(agent).queue)


def queue_keys(client: Redis, queue: str) -> list[str]:
    """The Redis lists holding `queue`'s messages, one per priority in use."""
    found = [k.decode() for k in client.scan_iter(match=f"{queue}{PRIORITY_SEP}*", count=1000)]
    return [queue, *found]


@dataclass(frozen=True)
class Held:
    """A message a worker took and has not acknowledged (an entry of kombu's `unacked` hash)."""

    tag: str
    queue: str
    celery_id: str
    task: str


def unacked(client: Redis) -> list[Held]:
    held = []
    for tag, raw in cast(dict[bytes, bytes], client.hgetall(UNACKED)).items():
        message, _exchange, routing_key = json.loads(raw)
        headers = message.get("headers") or {}
        held.append(
            Held(tag.decode(), routing_key, str(headers.get("id")), str(headers.get("task")))
        )
    return held


def held_by_queue(client: Redis) -> dict[str, list[Held]]:
    by_queue: dict[str, list[Held]] = {}
    for entry in unacked(client):
        by_queue.setdefault(entry.queue, []).append(entry)
    return by_queue


def quiet(client: Redis, queues: Iterable[str]) -> bool:
    """Nothing queued, nothing delivered and unacknowledged, nothing between the two."""
    if client.hlen(UNACKED) or client.hlen(keys.TRANSIT):
        return False
    return not any(client.llen(key) for queue in queues for key in queue_keys(client, queue))


def decode_element(element: bytes) -> tuple[dict[str, Any], list[Any]]:
    """A kombu message as it sits in a queue list: (its envelope, [args, kwargs, embed])."""
    envelope = json.loads(element)
    body = envelope["body"]
    if (envelope.get("properties") or {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return envelope, json.loads(body)


@dataclass
class Fleet:
    """Redis, one worker process per agent type and the environment they share."""

    env: dict[str, str]
    log_dir: Path
    redis: ManagedProcess
    redis_port: int
    concurrency: int = 16
    workers: dict[str, list[ManagedProcess]] = field(default_factory=dict)
    paused: dict[str, list[str]] = field(default_factory=dict)
    """Agent -> the worker nodes that stopped consuming its queue (see `pause`)."""

    @property
    def url(self) -> str:
        return self.env["CHORUS_REDIS_URL"]

    def client(self) -> Redis:
        return Redis.from_url(self.url)

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(create_app(Settings.from_env(self.env)))

    def start(self, agent: str) -> ManagedProcess:
        worker = start_worker([agent], self.env, self.log_dir, concurrency=self.concurrency)
        self.workers.setdefault(agent, []).append(worker)
        return worker

    def start_together(self, agents: list[str]) -> ManagedProcess:
        """One worker process consuming every queue of `agents` (paused and resumed per agent)."""
        worker = start_worker(agents, self.env, self.log_dir, concurrency=self.concurrency)
        for agent in agents:
            self.workers.setdefault(agent, []).append(worker)
        return worker

    def pause(self, agent: str) -> None:
        """No worker consumes `agent`'s queue any more, its processes keep running (Celery's
        cancel_consumer): what sits on the queue stays there, as with its workers stopped."""
        queue = queue_of(agent)
        control = self.dispatcher().app.control
        replies = control.inspect(timeout=1).active_queues() or {}
        nodes = [
            node for node, queues in replies.items() if any(q["name"] == queue for q in queues)
        ]
        assert nodes, f"nothing consumes {queue}"
        self.paused[agent] = nodes
        # With a destination, the reply waits for those nodes only, not the whole timeout.
        control.cancel_consumer(queue, destination=nodes, reply=True, timeout=10)
        wait_until(
            lambda: queue not in self.dispatcher().consumed_queues(0.5),
            timeout=60,
            what=f"workers to stop consuming {queue}",
        )

    def resume(self, agent: str) -> None:
        """The paused queue is consumed again (add_consumer), as by a worker just started."""
        nodes = self.paused.pop(agent)
        control = self.dispatcher().app.control
        control.add_consumer(queue_of(agent), destination=nodes, reply=True, timeout=10)
        self.wait_consuming([agent])

    def live(self, agent: str) -> list[ManagedProcess]:
        return [w for w in self.workers.get(agent, []) if w.alive()]

    def wait_consuming(self, agents: Iterable[str], timeout: float = 300.0) -> None:
        """Until a live worker consumes each agent's queue (Celery's remote control answers)."""
        wanted = {queue_of(a) for a in agents}
        dispatcher = self.dispatcher()

        def ready() -> bool:
            for agent in agents:
                if not self.live(agent):
                    last = self.workers[agent][-1]
                    raise RuntimeError(f"{last.name} died:\n{last.log_tail()}")
            return wanted <= dispatcher.consumed_queues(0.5)

        wait_until(ready, timeout=timeout, what=f"workers for {', '.join(sorted(wanted))}")

    def kill(self, agent: str) -> list[ManagedProcess]:
        """kill -9 every live worker of `agent`; returns once they are gone."""
        victims = self.live(agent)
        for victim in victims:
            victim.process.send_signal(signal.SIGKILL)
        for victim in victims:
            victim.process.wait(10)
        return victims

    def stop_agent(self, agent: str) -> None:
        """A warm shutdown of `agent`'s workers (SIGTERM: finish, ack, exit)."""
        stop_all(self.live(agent))

    def restart_redis(self) -> None:
        """SIGTERM Redis (it flushes its append-only file and closes every connection), keep it
        down until a worker has noticed, then start it again on the same port and data."""
        everyone = [w for ws in self.workers.values() for w in ws if w.alive()]
        before = {w.name: _notices(w) for w in everyone}
        self.redis.stop()
        wait_until(
            lambda: any(_notices(w) > before[w.name] for w in everyone),
            timeout=60,
            what="a worker to notice that Redis went away",
        )
        self.redis, _ = start_redis(self.log_dir, self.redis_port, appendonly=True)

    def logs(self) -> str:
        return "\n".join(
            w.log_path.read_text(errors="replace") for ws in self.workers.values() for w in ws
        )

    def put_back(self) -> int:
        """Messages the transit reaper found lost between BRPOP and `unacked` and put back."""
        return self.logs().count("lost between the broker and a worker")

    def replays(self) -> int:
        """Deliveries whose step was recorded already (the step replayed its outcome)."""
        return self.logs().count("already handled")

    def stop(self) -> None:
        stop_all([w for workers in self.workers.values() for w in workers])
        self.redis.stop()


def _notices(worker: ManagedProcess) -> int:
    return worker.log_path.read_text(errors="replace").count(RESTART_NOTICE)


@contextmanager
def fleet(
    base_env: Mapping[str, str],
    data_dir: Path,
    agents: Iterable[str],
    *,
    concurrency: int = 16,
    together: bool = False,
    **settings: str,
) -> Iterator[Fleet]:
    """A fresh Redis in `data_dir` and one worker per agent in `agents` (with `together`, one
    worker for all of them), all consuming.

    `settings` are CHORUS_* variables by their lower-case suffix (visibility_timeout="10").
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    server, url = start_redis(data_dir, appendonly=True)
    env = {**base_env, "CHORUS_REDIS_URL": url, "CHORUS_AUDIT": "0"}
    env.update({f"CHORUS_{name.upper()}": value for name, value in settings.items()})
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    running = Fleet(env, data_dir, server, port, concurrency)
    try:
        agents = list(agents)
        if together:
            running.start_together(agents)
        else:
            for agent in agents:
                running.start(agent)
        running.wait_consuming(agents)
        yield running
    finally:
        running.stop()


def take(client: Redis, queue: str, timeout: float = 60.0) -> tuple[str, bytes]:
    """Take the next message off `queue` as a worker's BRPOP would (and clear its transit
    ledger entry as the receiving worker does); returns the list it came from and the message."""
    taken: list[tuple[str, bytes]] = []

    def got() -> bool:
        for key in queue_keys(client, queue):
            element = cast(bytes | None, client.rpop(key))
            if element is not None:
                taken.append((key, element))
                return True
        return False

    wait_until(got, timeout=timeout, what=f"a message on {queue}")
    key, element = taken[0]
    celery_id = json.loads(element)["headers"]["id"]
    with client.pipeline(transaction=True) as pipe:
        for ledger_key in (keys.TRANSIT, keys.TRANSIT_SUSPECTS, keys.TRANSIT_RESTORES):
            pipe.hdel(ledger_key, celery_id)
        pipe.zrem(keys.TRANSIT_INDEX, celery_id)
        pipe.execute()
    return key, element


def give_back(client: Redis, key: str, element: bytes) -> None:
    """Deliver a message again, byte for byte, as a visibility-timeout restore would."""
    client.lpush(key, element)
