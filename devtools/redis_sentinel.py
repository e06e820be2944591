"""Start a private Redis Sentinel setup for development and tests: one master, one replica and
1-3 sentinels (``redis-server --sentinel`` with a generated configuration), all on loopback
with their files under the given directory.

:meth:`SentinelGroup.start` returns once the replica's link to the master is up and every
sentinel knows the master, its replica and the other sentinels, so a failover can be asked for
at once (:meth:`SentinelGroup.failover`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devtools.redis_cluster import NodeClients, info_field, wait_until
from devtools.redis_server import RedisServer, free_port

MASTER_NAME = "postbandit-broker"
DOWN_AFTER_MS = 1_000  # a silent master is down for a sentinel after this long
FAILOVER_TIMEOUT_MS = 5_000


def sentinel_config(master_name: str, master_port: int, quorum: int) -> str:
    """A sentinel's configuration file (the sentinel rewrites it with what it learns)."""
    return (
        f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
        f"sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {master_name} 1\n"
    )


@dataclass
class SentinelGroup:
    """A master, a replica and ``sentinels`` sentinels (quorum: a majority of them)."""

    data_dir: Path
    sentinels: int = 3
    master_name: str = MASTER_NAME
    servers: list[RedisServer] = field(default_factory=list, init=False)
    watchers: list[RedisServer] = field(default_factory=list, init=False)
    _client: NodeClients = field(default_factory=NodeClients, init=False, repr=False)

    @property
    def url(self) -> str:
        """The broker URL for kombu's Sentinel transport: every sentinel, ``;``-separated."""
        return ";".join(f"sentinel://127.0.0.1:{s.port}" for s in self.watchers)

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        """Start master, replica and sentinels; wait until all know each other.

        Raises:
            RuntimeError: a process did not start; TimeoutError: the setup did not settle.
        """
        if not 1 <= self.sentinels <= 3:
            raise ValueError(f"1 to 3 sentinels, not {self.sentinels}")
        try:
            self._start_servers()
            self._start_sentinels()
            self.wait_settled(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_servers(self) -> None:
        master = RedisServer(self.data_dir / "master", appendonly=True).start()
        self.servers.append(master)
        replica = RedisServer(
            self.data_dir / "replica", appendonly=True,
            extra_args=("--replicaof", "127.0.0.1", str(master.port)),
        )  # fmt: skip
        self.servers.append(replica.start())

    def _start_sentinels(self) -> None:
        quorum = self.sentinels // 2 + 1
        for i in range(self.sentinels):
            directory = self.data_dir / f"sentinel{i}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            config.write_text(sentinel_config(self.master_name, self.servers[0].port, quorum))
            sentinel = RedisServer(directory, port=free_port(), config_file=config,
                                   extra_args=("--sentinel",))  # fmt: skip
            self.watchers.append(sentinel.launch())
        for sentinel in self.watchers:
            sentinel.wait_ready()

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait until the current master's replicas are linked to it and every sentinel names
        that master and knows its replica and every other sentinel.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        wait_until(self._settled, timeout, "the sentinels to agree on master and replica")

    def _settled(self) -> bool:
        master_port = self.master().port
        replicas = [s for s in self.servers if s.port != master_port]
        if any(info_field(self._client(r), "replication", "master_link_status") != "up"
               for r in replicas):  # fmt: skip
            return False
        return all(self._sentinel_knows(s, master_port) for s in self.watchers)

    def _sentinel_knows(self, sentinel: RedisServer, master_port: int) -> bool:
        client = self._client(sentinel)
        state: Any = client.sentinel_master(self.master_name)
        replicas: Any = client.sentinel_slaves(self.master_name)
        linked = [r for r in replicas
                  if r["master-link-status"] == "ok" and not r["is_disconnected"]]  # fmt: skip
        return (
            int(state["port"]) == master_port
            and len(linked) == len(self.servers) - 1
            and int(state["num-other-sentinels"]) == len(self.watchers) - 1
        )

    def master(self) -> RedisServer:
        """The server that the first sentinel names as master now."""
        port = self._names(self.watchers[0])
        return next(s for s in self.servers if s.port == port)

    def failover(self, timeout: float = 30.0) -> RedisServer:
        """Have the sentinels promote the replica; wait until it is master and every sentinel
        names it. The old master rejoins as a replica later (within about 20 s: the
        sentinels' INFO period), which this does not wait for.

        Returns: the new master. Raises: TimeoutError, not within ``timeout`` seconds.
        """
        old = self.master()
        new = next(s for s in self.servers if s is not old)
        self._client(self.watchers[0]).sentinel_failover(self.master_name)
        wait_until(lambda: info_field(self._client(new), "replication", "role") == "master",
                   timeout, "the replica to be promoted")  # fmt: skip
        wait_until(lambda: all(self._names(s) == new.port for s in self.watchers),
                   timeout, "every sentinel to name the new master")  # fmt: skip
        return new

    def _names(self, sentinel: RedisServer) -> int:
        address: Any = self._client(sentinel).sentinel_get_master_addr_by_name(self.master_name)
        return int(address[1])

    def stop(self) -> None:
        """Stop the sentinels first (so none fails over a stopping master), then the rest."""
        self._client.close()
        for server in [*self.watchers, *reversed(self.servers)]:
            server.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
