"""The journal of accepted event batches (``P:pending``): each stays until a worker applied it,
so workers can publish again what the broker lost (workers/sweeper.py)."""

from __future__ import annotations

from typing import Any

import redis

from core.storage.keys import Keys
from core.storage.records import text


class Journal:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def add(self, batch_id: str, payload: str, now: float) -> None:
        """Record an accepted batch (``payload``: its task arguments as JSON) until applied."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.pending, batch_id, payload)
        pipe.zadd(self.keys.pending_since, {batch_id: now})
        pipe.execute()

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
