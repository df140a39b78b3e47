"""A Redis Sentinel group of plain redis-server processes: a primary, its replicas, Sentinels.

    group = start_sentinel_group(tmp_path, replicas=1, sentinels=3)
    group.url           # sentinel://127.0.0.1:P1;sentinel://127.0.0.1:P2;...
    group.kill_primary()
    group.wait_promoted(old)

Sentinels notice a dead primary after DOWN_AFTER_MS and promote a replica once a majority of
them agree, so a failover here takes a second or two, as it would with these settings in
production.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from dispatcher.embedded import (
    ManagedProcess,
    free_port,
    redis_server_binary,
    start_redis,
    stop_all,
    wait_until,
)

MASTER = "chorus-test"
"""Not Redis's usual "mymaster", so a test proves CHORUS_SENTINEL_MASTER is read."""
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000

Address = tuple[str, int]


@dataclass
class SentinelGroup:
    primary: ManagedProcess
    primary_port: int
    replicas: list[tuple[ManagedProcess, int]]
    sentinels: list[tuple[ManagedProcess, int]]
    master: str = MASTER
    killed: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for _, port in self.sentinels)

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinels[index][1], socket_timeout=2, decode_responses=True)

    def master_address(self) -> Address:
        """Where the Sentinels' majority says the primary is now."""
        votes: dict[Address, int] = {}
        for index in range(len(self.sentinels)):
            try:
                reply: Any = self.sentinel(index).sentinel_get_master_addr_by_name(self.master)
            except redis.RedisError:
                continue
            if reply:
                address = (str(reply[0]), int(reply[1]))
                votes[address] = votes.get(address, 0) + 1
        return max(votes, key=lambda address: votes[address])

    def ready(self) -> bool:
        """Every replica in sync and every Sentinel knowing them and the other Sentinels."""
        for _, port in self.replicas:
            info = redis.Redis(port=port, socket_timeout=2).info("replication")
            if info.get("master_link_status") != "up":
                return False
        for index in range(len(self.sentinels)):
            client = self.sentinel(index)
            known: list[dict[str, Any]] = client.sentinel_slaves(self.master)
            healthy = [r for r in known if not ({"s_down", "disconnected"} & set(r["flags"]))]
            others = cast(list[Any], client.sentinel_sentinels(self.master))
            if len(healthy) < len(self.replicas) or len(others) < len(self.sentinels) - 1:
                return False
        return True

    def kill_primary(self) -> Address:
        """kill -9 of the primary, as a crashed host would be; returns its address."""
        old = self.master_address()
        self.primary.process.send_signal(signal.SIGKILL)
        self.primary.process.wait(10)
        self.killed.append(self.primary)
        return old

    def wait_promoted(self, old: Address, timeout: float = 30.0) -> Address:
        wait_until(lambda: self.master_address() != old, timeout=timeout, what="a promotion")
        new = self.master_address()
        role = redis.Redis(host=new[0], port=new[1], socket_timeout=2).info("replication")["role"]
        assert role == "master", (new, role)
        return new

    def stop(self) -> None:
        stop_all([process for process, _ in [*self.sentinels, *self.replicas]])
        self.primary.stop()


def _sentinel_conf(folder: Path, port: int, primary_port: int, quorum: int) -> Path:
    path = folder / f"sentinel-{port}.conf"
    path.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} {quorum}\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    return path


def start_sentinel_group(
    folder: Path, *, replicas: int = 1, sentinels: int = 3, ready_timeout: float = 60.0
) -> SentinelGroup:
    """Start the group and wait until a failover could happen (replicas synced, Sentinels
    acquainted); Sentinel rewrites its config file, so each gets a file of its own."""
    primary, url = start_redis(folder)
    primary_port = int(url.rsplit(":", 1)[1].split("/")[0])
    group = SentinelGroup(primary, primary_port, [], [])
    try:
        for _ in range(replicas):
            port = free_port()
            replicaof = ["--replicaof", "127.0.0.1", str(primary_port)]
            own_dir = folder / f"replica-{port}"  # its own dump.rdb, not the primary's
            own_dir.mkdir()
            process, _ = start_redis(own_dir, port, extra_args=replicaof)
            group.replicas.append((process, port))
        quorum = sentinels // 2 + 1
        for _ in range(sentinels):
            port = free_port()
            conf = _sentinel_conf(folder, port, primary_port, quorum)
            argv = [redis_server_binary(), str(conf), "--sentinel"]
            process = ManagedProcess(f"sentinel-{port}", argv, os.environ, folder)
            group.sentinels.append((process, port))
        wait_until(_answering(group), timeout=15, what="the Sentinels")
        wait_until(group.ready, timeout=ready_timeout, what="the Sentinel group")
    except BaseException:
        group.stop()
        raise
    return group


def _answering(group: SentinelGroup) -> Any:
    def check() -> bool:
        for process, port in group.sentinels:
            if not process.alive():
                raise RuntimeError(f"Sentinel {port} exited:\n{process.log_tail()}")
            try:
                redis.Redis(port=port, socket_connect_timeout=0.5).ping()
            except redis.RedisError:
                return False
        return True

    return check
