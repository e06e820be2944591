"""Redis clients and the storage built on them: made here, and only here, with one timeout policy.

The web tier answers members, so its Redis calls give up after ``BANDIT_REDIS_TIMEOUT`` and
the request degrades; a worker only applies events, which it retries, so it waits longer
rather than fail a batch that a busy Redis would have taken.
"""

from __future__ import annotations

from typing import Literal

import redis

from core.settings import Settings
from core.storage import Storage

Role = Literal["web", "worker"]

WORKER_REDIS_TIMEOUT = 5.0
HEALTH_CHECK_SECONDS = 30


def redis_timeout(settings: Settings, role: Role) -> float:
    """Seconds a Redis call of ``role`` may take (socket connect and read)."""
    return settings.redis_timeout if role == "web" else WORKER_REDIS_TIMEOUT


def redis_client(url: str, settings: Settings, role: Role) -> redis.Redis:
    """A client with its own connection pool; make it in the process that uses it."""
    timeout = redis_timeout(settings, role)
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )


def statistics(settings: Settings, role: Role) -> Storage:
    """The storage of statistics, catalogue, attribution and journal on ``REDIS_URL``."""
    client = redis_client(settings.redis_url, settings, role)
    return Storage(client, settings.key_prefix, settings.decision_log_maxlen, settings.forum_window)


def broker(settings: Settings, role: Role) -> redis.Redis:
    """The Celery broker's Redis (``CELERY_BROKER_URL``), read for the queue's depth and head."""
    return redis_client(settings.broker_url, settings, role)
