"""The journal of accepted event batches (``P:{pending}:batches``): each stays until a worker
applied it, so workers can publish again what the broker lost (workers/sweeper.py).

Its keys share one hash tag, so a batch enters and leaves in one transaction (MULTI) in one
slot, on one Redis as on a cluster. With ``replicas`` > 0 the write of an accepted batch is
followed, on the same connection, by ``WAIT replicas wait_ms``: it returns only once that many
replicas have the batch, so a master that fails over after the batch was accepted cannot take
it along (a replica promoted in its place has it). A master with fewer replicas connected than
that needs every connected one (see :meth:`Journal._connected_replicas`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from core.storage.keys import Keys
from core.storage.records import text


class NotReplicated(redis.RedisError):
    """Fewer replicas than required acknowledged a journal write within the wait (it is on
    the master, and may still count: applying a batch twice counts it once)."""


class Journal:
    """``replicas``: how many replicas must acknowledge an added batch within ``wait_ms``
    milliseconds (0: none, no wait)."""

    def __init__(self, client: redis.Redis, keys: Keys, replicas: int = 0, wait_ms: int = 100):
        self.client = client
        self.keys = keys
        self.replicas = replicas
        self.wait_ms = wait_ms

    def add(self, batch_id: str, payload: str, now: float) -> None:
        """Record an accepted batch (``payload``: its task arguments as JSON) until applied;
        with ``replicas``, return only once that many replicas have it, or every replica the
        master has connected if fewer (a check only when WAIT came back short).

        Raises:
            NotReplicated: too few replicas acknowledged within ``wait_ms``.
            redis.RedisError: Redis failed (the batch may or may not be journalled).
        """
        if not self.replicas:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.keys.pending, batch_id, payload)
            pipe.zadd(self.keys.pending_since, {batch_id: now})
            pipe.execute()
            return
        acknowledged = self._replicated([
            ("HSET", self.keys.pending, batch_id, payload),
            ("ZADD", self.keys.pending_since, repr(now), batch_id),
        ])  # fmt: skip
        if acknowledged < self.replicas and acknowledged < self._connected_replicas():
            raise NotReplicated(
                f"{acknowledged} of {self.replicas} replicas acknowledged the journal write "
                f"within {self.wait_ms} ms"
            )

    def _replicated(self, commands: list[tuple[Any, ...]]) -> int:
        """Run ``commands`` in MULTI/EXEC, then WAIT, all on one connection of the node that
        holds the journal (WAIT counts the writes of its own connection); how many replicas
        acknowledged them."""
        pool = self._node().connection_pool
        conn = pool.get_connection()
        sent = [("MULTI",), *commands, ("EXEC",), ("WAIT", self.replicas, self.wait_ms)]
        try:
            conn.send_packed_command(conn.pack_commands(sent))
            replies = [conn.read_response() for _ in sent]
        except (redis.RedisError, OSError):
            conn.disconnect()  # replies may be left unread on it
            self._refresh_slots()
            raise
        finally:
            pool.release(conn)
        return int(replies[-1])

    def _connected_replicas(self) -> int:
        """How many replicas the journal's master has now. A master left without one (its
        replica was promoted when the old master died, and none has joined since) takes
        batches on its own: refusing them would stop every event until a replica joins, and
        a second failure of that slot loses it for good either way (nothing is left to
        promote); its append-only file then keeps them, as on one Redis."""
        return int(self._node().info("replication").get("connected_slaves", 0))

    def _node(self) -> redis.Redis:
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(self.keys.pending)
            return self.client.get_redis_connection(node)
        return self.client

    def _refresh_slots(self) -> None:
        """After a failure on a cluster, read the slot map again: the journal's master may
        have failed over (a new one answers MOVED, or the old one not at all)."""
        if isinstance(self.client, RedisCluster):
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                self.client.nodes_manager.initialize()

    def forget(self, batch_id: str) -> None:
        """The batch was applied (or can no longer count): drop it from the journal."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.pending, batch_id)
        pipe.zrem(self.keys.pending_since, batch_id)
        pipe.execute()

    def overdue(self, before: float, limit: int) -> list[tuple[str, str | None]]:
        """Up to ``limit`` journalled (batch id, payload), handed to the broker strictly before
        ``before``, oldest first; the payload is None if the batch was forgotten meanwhile."""
        found: Any = self.client.zrangebyscore(
            self.keys.pending_since, "-inf", f"({before!r}", 0, limit
        )
        ids = [i.decode() for i in found]
        if not ids:
            return []
        payloads = self.client.hmget(self.keys.pending, ids)
        return [(i, text(p)) for i, p in zip(ids, payloads, strict=True)]

    def since(self, batch_id: str) -> float | None:
        """When a journalled batch was last handed to the broker, or None if it is not there."""
        score = self.client.zscore(self.keys.pending_since, batch_id)
        return None if score is None else float(score)

    def requeued(self, batch_id: str, now: float) -> None:
        """The batch was handed to the broker again at ``now``."""
        self.client.zadd(self.keys.pending_since, {batch_id: now}, xx=True)

    def oldest_since(self) -> float | None:
        """When the batch handed to the broker longest ago was handed over (at acceptance, or
        when the sweeper published it again); None when the journal is empty."""
        oldest: Any = self.client.zrange(self.keys.pending_since, 0, 0, withscores=True)
        return float(oldest[0][1]) if oldest else None

    def sweep_lock(self, seconds: float) -> redis.lock.Lock:
        """A lock that one worker at a time holds while it sweeps the journal."""
        return self.client.lock(self.keys.pending_lock, timeout=seconds, blocking=False)
