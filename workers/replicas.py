"""WAIT for replicas after the writes a failover must not lose (CHORUS_REDIS_WAIT_REPLICAS).

Redis replicates asynchronously: the primary answers a write before any replica has it, so a
primary that dies in the next instant takes the write with it, and Sentinel promotes a replica
that never saw it. `WAIT n ms` on the connection that wrote blocks the caller (not the server)
until `n` replicas have acknowledged everything that connection wrote, or `ms` passed. Chorus
sends it after each state script (step records, budget, reviews: one atomic Lua call each) and
after each agent message it publishes; everything else a failover loses is redone from the
transit ledger and by redelivery (see the README's "Redis Sentinel").

WAIT is no consensus: past its bound the write stays on the primary alone (counted and logged
here, and WAITs pause for a few seconds, so a primary left without replicas costs one timeout
per pause, not one per write); Redis's own `min-replicas-to-write` is what refuses writes with
no replica attached.
It cannot run inside MULTI (it would not block), so it follows the write in a plain pipeline on
the same connection.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

WARN_EVERY = 60.0
"""Seconds between two warnings about writes no replica acknowledged in time."""
SUSPEND_SECONDS = 5.0
"""After a short WAIT, this process sends none for this long: with its replica gone (a
failover promoted the only one) every WAIT would cost its whole timeout and protect nothing."""


def wait_command(replicas: int, timeout_ms: int) -> tuple[Any, ...]:
    return ("WAIT", replicas, timeout_ms)


class ShortWaits:
    """Counts writes that fewer replicas than asked acknowledged in time, warns now and then,
    and suspends the WAITs for SUSPEND_SECONDS after each."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._warned = -WARN_EVERY
        self._suspended_until = 0.0

    def active(self) -> bool:
        return time.monotonic() >= self._suspended_until

    def check(self, reply: Any, replicas: int, timeout_ms: int) -> None:
        if isinstance(reply, int) and reply >= replicas:
            return
        with self._lock:
            self.count += 1
            now = time.monotonic()
            self._suspended_until = now + SUSPEND_SECONDS
            if now - self._warned < WARN_EVERY:
                return
            self._warned = now
        log.warning(
            "Redis WAIT: %s of %d replica(s) acknowledged a write within %d ms; it is on the "
            "primary only until they catch up, and WAITs pause for %g s (%d such writes so "
            "far; check the replicas, or CHORUS_REDIS_WAIT_REPLICAS / _TIMEOUT_MS)",
            reply,
            replicas,
            timeout_ms,
            SUSPEND_SECONDS,
            self.count,
        )


SHORT_WAITS = ShortWaits()
"""This process's count (the state client and the transport share it)."""


class ReplicatedRedis(redis.Redis):
    """A redis-py client whose script calls (EVALSHA) return only once `wait_replicas`
    replicas have the script's writes, or `wait_timeout_ms` passed. With 0 it is redis.Redis."""

    wait_replicas = 0
    wait_timeout_ms = 100

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if self.wait_replicas <= 0 or not SHORT_WAITS.active():
            return super().evalsha(sha, numkeys, *keys_and_args)
        with self.pipeline(transaction=False) as pipe:
            pipe.evalsha(sha, numkeys, *keys_and_args)
            wait = wait_command(self.wait_replicas, self.wait_timeout_ms)
            pipe.execute_command(*wait)  # type: ignore[no-untyped-call]
            result, acked = pipe.execute(raise_on_error=False)
        if isinstance(result, Exception):
            raise result  # NoScriptError included: the caller loads the script and calls again
        SHORT_WAITS.check(acked, self.wait_replicas, self.wait_timeout_ms)
        return result
