"""Time passing for a real Redis, for tests with an injected clock: every key's TTL shrinks."""

from __future__ import annotations

import redis


def advance(client: redis.Redis, seconds: float) -> None:
    """Let ``seconds`` pass for every key that expires: its TTL shrinks by that much, and a key
    whose TTL ends within it is deleted, as Redis would have expired it.

    The storage layer sets TTLs relative to the ``now`` it is given, so a test that moves its
    clock by ``seconds`` and calls this keeps Redis in step with it.
    """
    shift = int(seconds * 1000)
    for key in client.scan_iter(count=1000):
        left = client.pttl(key)
        if left < 0:
            continue
        if left <= shift:
            client.delete(key)
        else:
            client.pexpire(key, left - shift)
