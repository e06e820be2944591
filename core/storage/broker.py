"""Reads of Celery's Redis broker: how many messages wait in a queue, and which is next.

These depend on kombu's Redis transport layout (one list per priority step; messages pushed on
the left, popped on the right), so they live here rather than beside the service's own keys.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a Celery queue of the Redis transport (all its priority lists)."""
    pipe = client.pipeline(transaction=False)
    for step in PRIORITY_STEPS:
        pipe.llen(f"{queue}{RedisChannel.sep}{step}" if step else queue)
    return sum(int(n) for n in pipe.execute())


def oldest_waiting_task(client: redis.Redis, queue: str) -> str | None:
    """The task id of the message that has waited longest in a Celery queue (next to be
    delivered), or None."""
    raw: Any = client.lindex(queue, -1)
    if raw is None:
        return None
    headers = json.loads(raw).get("headers") or {}
    task_id = headers.get("id")
    return str(task_id) if task_id else None
