"""Start a real, private Redis Cluster for development and tests: 3 masters, 3 replicas.

Each node is the project's ``redis-server`` (:func:`devtools.redis_server.find_redis_server`)
on a free loopback port with its own directory (``cluster-config-file``, AOF) under the given
one. The cluster is formed with redis-py alone, so no ``redis-cli`` is needed: every master
gets its own config epoch, meets the first node, takes an equal range of the 16384 slots, and
each replica follows one master. :meth:`LocalCluster.start` returns once every node reports
``cluster_state:ok`` with every slot served, and every replica's link to its master is up.
"""

from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis
from redis.crc import key_slot

from devtools.redis_server import RedisServer

SLOTS = 16_384
NODE_TIMEOUT_MS = 2_000  # how long a silent master takes to be failed over
BUS_OFFSET = 10_000  # Redis 6.2 puts a node's cluster bus on its port + 10000


def cluster_port() -> int:
    """A loopback port that, with its cluster bus port (+10000), was free a moment ago.

    Raises:
        RuntimeError: none found after many tries.
    """
    for _ in range(200):
        port = random.randint(20_000, 65_535 - BUS_OFFSET)
        if _free(port) and _free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free pair of loopback ports for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds (a Redis error counts as not yet).

    Raises:
        TimeoutError: naming ``what``, after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def slot_ranges(masters: int) -> list[range]:
    """The 16384 hash slots in ``masters`` contiguous ranges of (nearly) equal size."""
    bounds = [i * SLOTS // masters for i in range(masters + 1)]
    return [range(low, high) for low, high in itertools.pairwise(bounds)]


def info_field(client: redis.Redis, section: str, name: str) -> str:
    """One field of ``INFO section`` (or of ``CLUSTER INFO`` for section ``cluster-info``)."""
    fields = client.cluster("INFO") if section == "cluster-info" else client.info(section)
    return str(fields.get(name, ""))


class NodeClients:
    """One decoding client per node port, made on first use and closed together."""

    def __init__(self) -> None:
        self._clients: dict[int, redis.Redis] = {}

    def __call__(self, node: RedisServer) -> redis.Redis:
        if node.port not in self._clients:
            self._clients[node.port] = redis.Redis(
                port=node.port, socket_timeout=5, decode_responses=True
            )
        return self._clients[node.port]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replica each, all under ``data_dir``; every node
    with AOF persistence (``appendfsync always``) unless ``appendonly`` is off (the benchmark
    compares the cluster with a Redis that persists nothing)."""

    data_dir: Path
    masters: int = 3
    replicas: int = 1
    appendonly: bool = True
    nodes: list[RedisServer] = field(default_factory=list, init=False)
    _client: NodeClients = field(default_factory=NodeClients, init=False, repr=False)

    @property
    def primaries(self) -> list[RedisServer]:
        """The nodes started as masters (a failover may have changed their roles since)."""
        return self.nodes[: self.masters]

    @property
    def secondaries(self) -> list[RedisServer]:
        """The nodes started as replicas, ``replicas`` per master in master order."""
        return self.nodes[self.masters :]

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node (a cluster client discovers the others)."""
        return self.primaries[0].url

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start every node, form the cluster, and wait until it is whole.

        Raises:
            RuntimeError: a node did not start; TimeoutError: the cluster did not form.
        """
        count = self.masters * (1 + self.replicas)
        for i in range(count):
            node = RedisServer(
                data_dir=self.data_dir / f"node{i}", port=cluster_port(),
                appendonly=self.appendonly,
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            )  # fmt: skip
            self.nodes.append(node.launch())
        try:
            for node in self.nodes:
                node.wait_ready()
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, timeout: float) -> None:
        first = self._client(self.nodes[0])
        for epoch, node in enumerate(self.primaries, start=1):
            # Distinct epochs up front: otherwise the nodes settle their collision by gossip.
            self._client(node).execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        for node, slots in zip(self.primaries, slot_ranges(self.masters), strict=True):
            self._client(node).execute_command("CLUSTER ADDSLOTS", *slots)
        wait_until(self._all_known, timeout, "every node to know every other")
        for i, replica in enumerate(self.secondaries):
            master_id = self._client(self.primaries[i // self.replicas]).execute_command(
                "CLUSTER MYID"
            )
            self._client(replica).execute_command("CLUSTER REPLICATE", master_id)
        self.wait_healthy(timeout)

    def _all_known(self) -> bool:
        return all(len(self._client(n).cluster("NODES")) == len(self.nodes) for n in self.nodes)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` with every slot served and sees
        every replica, and every replica's link to its master is up.

        Raises:
            TimeoutError: the cluster did not get there in ``timeout`` seconds.
        """
        wait_until(self._healthy, timeout, "cluster_state:ok on every node, replicas in sync")

    def _healthy(self) -> bool:
        for node in self.nodes:
            client = self._client(node)
            if info_field(client, "cluster-info", "cluster_state") != "ok":
                return False
            if info_field(client, "cluster-info", "cluster_slots_ok") != str(SLOTS):
                return False
            nodes = client.cluster("NODES").values()
            if sum("slave" in n["flags"] for n in nodes) != len(self.secondaries):
                return False
        return all(
            info_field(self._client(r), "replication", "master_link_status") == "up"
            for r in self.secondaries
        )

    def masters_now(self) -> list[redis.Redis]:
        """A client of each node that is a master now (per its own ``INFO replication``)."""
        clients = [self._client(node) for node in self.nodes if node.process is not None]
        return [c for c in clients if info_field(c, "replication", "role") == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s hash slot now, per a live node's slot map."""
        slot = key_slot(key.encode())
        live = next(n for n in self.nodes if n.process is not None and n.process.poll() is None)
        slots = self._client(live).execute_command("CLUSTER SLOTS")
        # Each entry: first slot, last slot, then the master's [host, port, id], the replicas'.
        port = next(int(entry[2][1]) for entry in slots if entry[0] <= slot <= entry[1])
        return next(node for node in self.nodes if node.port == port)

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A node that replicates ``master`` now."""
        return next(
            node for node in self.nodes if node is not master and node.process is not None
            and info_field(self._client(node), "replication", "master_port") == str(master.port)
        )  # fmt: skip

    def wait_promoted(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Wait until ``node`` reports itself a master (a failover promoted it).

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        wait_until(lambda: info_field(self._client(node), "replication", "role") == "master",
                   timeout, f"node {node.port} to be promoted")  # fmt: skip

    def flushall(self) -> None:
        """Empty every master (and so, by replication, every replica)."""
        for client in self.masters_now():
            client.flushall()

    def stop(self) -> None:
        """Stop every node."""
        self._client.close()
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - a development aid
    """Run a cluster in the foreground: ``python -m devtools.redis_cluster DIR``; Ctrl-C stops."""
    import sys

    with LocalCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "var/cluster")) as cluster:
        print(cluster.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
