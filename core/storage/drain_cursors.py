"""Where the decision log drain stands (``P:drain:cursors``) and who drains (``P:drain:lock``).

A cursor is the end (unix ms, exclusive) of the last time slice of a stream written to the
decision files; it only moves after the slice's file is durable, and only for the holder of the
lock, so a drainer whose lock expired mid-write cannot move it (see core.decision_files.drain).
"""

from __future__ import annotations

import redis

from core.storage.keys import Keys
from core.storage.records import text


class LockLost(Exception):
    """The drain lock is no longer this drainer's, or the cursor moved under it."""


class DrainCursors:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def lock(self, seconds: float) -> redis.lock.Lock:
        """A lock that one drainer at a time holds (non-blocking ``acquire``)."""
        return self.client.lock(self.keys.drain_lock, timeout=seconds, blocking=False)

    def get(self, source: str) -> int | None:
        """The end of the last slice of ``source`` drained (unix ms); None before the first."""
        value = text(self.client.hget(self.keys.drain_cursors, source))
        return None if value is None else int(value)

    def advance(self, source: str, expected: int | None, new: int, lock: redis.lock.Lock) -> None:
        """Move the cursor of ``source`` from ``expected`` to ``new``, in one transaction that
        also checks that ``lock`` is still held by its owner.

        Raises:
            LockLost: the lock expired or was taken, or the cursor is not at ``expected``.
            redis.RedisError: Redis failed (the cursor did not move).
        """
        token = lock.local.token
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.drain_lock, self.keys.drain_cursors)
                held = pipe.get(self.keys.drain_lock)
                current = text(pipe.hget(self.keys.drain_cursors, source))
                if token is None or text(held) != text(token) or current != _text(expected):
                    raise LockLost(f"{source}: the drain lock or cursor moved")
                pipe.multi()
                pipe.hset(self.keys.drain_cursors, source, new)
                if lock.timeout:  # renewed: the lock outlives one slice, not the whole drain
                    pipe.pexpire(self.keys.drain_lock, int(lock.timeout * 1000))
                pipe.execute()
            except redis.WatchError as exc:
                raise LockLost(f"{source}: the drain lock or cursor moved") from exc

    def server_ms(self) -> int:
        """The Redis server's clock (unix ms): the clock of the stream ids."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _text(cursor: int | None) -> str | None:
    return None if cursor is None else str(cursor)
