"""The journal of accepted event batches (``P:{pending:K}:batches``): each stays until a worker
applied it, so workers can publish again what the broker lost (workers/sweeper.py).

It is spread over ``JOURNAL_SHARDS`` shards, a batch's chosen by a hash of its id
(:func:`~core.storage.keys.journal_shard`), so that a cluster spreads the journal's writes
over its masters. A shard's two keys share one hash tag, so a batch enters and leaves in one
transaction (MULTI) in one slot, on one Redis as on a cluster; the readers (the sweep, the
oldest batch's age) merge the shards. With ``replicas`` > 0 the write of an accepted batch is
followed, on the same connection, by ``WAIT replicas wait_ms``: it returns only once that many
replicas have the batch, so a master that fails over after the batch was accepted cannot take
it along (a replica promoted in its place has it). A master with fewer replicas connected than
that needs every connected one (see :meth:`Journal._connected_replicas`).

The journal of releases before the shards (``P:{pending}:batches``) is still read: the sweep
moves its batches into their shards (:meth:`Journal.adopt_legacy`), and the oldest batch's age
counts them until then.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from core.storage.keys import Keys, journal_shard
from core.storage.records import text
from core.storage.scripts import batch


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
        batches, since = self._shard(batch_id)
        if not self.replicas:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(batches, batch_id, payload)
            pipe.zadd(since, {batch_id: now})
            pipe.execute()
            return
        acknowledged = self._replicated(batches, [
            ("HSET", batches, batch_id, payload),
            ("ZADD", since, repr(now), batch_id),
        ])  # fmt: skip
        if acknowledged < self.replicas and acknowledged < self._connected_replicas(batches):
            raise NotReplicated(
                f"{acknowledged} of {self.replicas} replicas acknowledged the journal write "
                f"within {self.wait_ms} ms"
            )

    def _shard(self, batch_id: str) -> tuple[str, str]:
        """The (batches, since) keys of the shard that journals ``batch_id``."""
        shard = journal_shard(batch_id)
        return self.keys.pending(shard), self.keys.pending_since(shard)

    def _replicated(self, key: str, commands: list[tuple[Any, ...]]) -> int:
        """Run ``commands`` in MULTI/EXEC, then WAIT, all on one connection of the node that
        holds ``key`` (WAIT counts the writes of its own connection); how many replicas
        acknowledged them."""
        pool = self._node(key).connection_pool
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

    def _connected_replicas(self, key: str) -> int:
        """How many replicas the journal's master has now. A master left without one (its
        replica was promoted when the old master died, and none has joined since) takes
        batches on its own: refusing them would stop every event until a replica joins, and
        a second failure of that slot loses it for good either way (nothing is left to
        promote); its append-only file then keeps them, as on one Redis."""
        return int(self._node(key).info("replication").get("connected_slaves", 0))

    def _node(self, key: str) -> redis.Redis:
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(key)
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
        batches, since = self._shard(batch_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(batches, batch_id)
        pipe.zrem(since, batch_id)
        pipe.execute()

    def overdue(self, before: float, limit: int) -> list[tuple[str, str | None]]:
        """Up to ``limit`` journalled (batch id, payload), handed to the broker strictly before
        ``before``, oldest first over every shard; the payload is None if the batch was
        forgotten meanwhile."""
        shards = self.keys.journal_shards
        pipe = batch(self.client)
        for _, since in shards:
            pipe.zrangebyscore(since, "-inf", f"({before!r}", 0, limit, withscores=True)
        found = [(float(score), batch_id.decode(), shard)
                 for shard, replies in enumerate(pipe.execute())
                 for batch_id, score in replies]  # fmt: skip
        oldest = sorted(found)[:limit]
        if not oldest:
            return []
        pipe = batch(self.client)
        for _, batch_id, shard in oldest:
            pipe.hget(shards[shard][0], batch_id)
        return [(i, text(p)) for (_, i, _), p in zip(oldest, pipe.execute(), strict=True)]

    def since(self, batch_id: str) -> float | None:
        """When a journalled batch was last handed to the broker, or None if it is not there
        (in its shard, or in the journal of releases before the shards)."""
        pipe = batch(self.client)
        pipe.zscore(self._shard(batch_id)[1], batch_id)
        pipe.zscore(self.keys.legacy_pending_since, batch_id)
        found = [float(score) for score in pipe.execute() if score is not None]
        return found[0] if found else None

    def requeued(self, batch_id: str, now: float) -> None:
        """The batch was handed to the broker again at ``now``."""
        self.client.zadd(self._shard(batch_id)[1], {batch_id: now}, xx=True)

    def oldest_since(self) -> float | None:
        """When the batch handed to the broker longest ago was handed over (at acceptance, or
        when the sweeper published it again), over every shard and the journal of releases
        before them; None when the journal is empty."""
        pipe = batch(self.client)
        for _, since in self.keys.journals:
            pipe.zrange(since, 0, 0, withscores=True)
        oldest = [float(reply[0][1]) for reply in pipe.execute() if reply]
        return min(oldest, default=None)

    def is_empty(self) -> bool:
        """Whether no shard, nor the journal of releases before them, holds a batch."""
        pipe = batch(self.client)
        for batches, since in self.keys.journals:
            pipe.exists(batches, since)
        return not any(pipe.execute())

    def adopt_legacy(self, limit: int) -> int:
        """Move up to ``limit`` batches of the journal of releases before the shards into
        their shards, each with when it was last handed to the broker; how many were moved.

        A batch is written to its shard before it leaves the old journal, so a failure in
        between leaves it in both (the next call moves it again). A batch a worker applies
        meanwhile may stay journalled, and be published again once (applying it twice
        counts it once).

        Raises:
            redis.RedisError: Redis failed.
        """
        legacy, legacy_since = self.keys.legacy_pending, self.keys.legacy_pending_since
        found: Any = self.client.zrange(legacy_since, 0, limit - 1, withscores=True)
        if not found:
            return 0
        ids = [batch_id.decode() for batch_id, _ in found]
        payloads = self.client.hmget(legacy, ids)
        by_shard: dict[tuple[str, str], list[tuple[str, float, Any]]] = {}
        for batch_id, (_, score), payload in zip(ids, found, payloads, strict=True):
            if payload is not None:  # forgotten meanwhile: only its time is left to drop
                by_shard.setdefault(self._shard(batch_id), []).append((batch_id, score, payload))
        for (batches, since), moved in by_shard.items():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(batches, mapping={batch_id: payload for batch_id, _, payload in moved})
            pipe.zadd(since, {batch_id: score for batch_id, score, _ in moved})
            pipe.execute()
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(legacy, *ids)
        pipe.zrem(legacy_since, *ids)
        pipe.execute()
        return len(ids)

    def sweep_lock(self, seconds: float) -> redis.lock.Lock:
        """A lock that one worker at a time holds while it sweeps the journal."""
        return self.client.lock(self.keys.pending_lock, timeout=seconds, blocking=False)
