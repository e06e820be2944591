"""Redis clients and the storage built on them: made here, and only here, with one timeout policy.

The web tier answers members, so its Redis calls give up after ``BANDIT_REDIS_TIMEOUT`` and
the request degrades; a worker only applies events, which it retries, so it waits longer
rather than fail a batch that a busy Redis would have taken.

Statistics live on one Redis, or on a Redis Cluster (``BANDIT_REDIS_CLUSTER``): ``REDIS_URL``
then names any node, and the client finds the others. The broker is a plain Redis, or one
that Redis Sentinel manages (a ``sentinel://`` ``CELERY_BROKER_URL``): its client asks the
sentinels for the master, and again after a failover.
"""

from __future__ import annotations

from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from core.settings import SENTINEL_SCHEME, Settings, sentinel_addresses
from core.storage import Storage
from core.storage.scripts import load_on_connect

Role = Literal["web", "worker"]

WORKER_REDIS_TIMEOUT = 5.0
HEALTH_CHECK_SECONDS = 30


def redis_timeout(settings: Settings, role: Role) -> float:
    """Seconds a Redis call of ``role`` may take (socket connect and read)."""
    return settings.redis_timeout if role == "web" else WORKER_REDIS_TIMEOUT


def _options(settings: Settings, role: Role) -> dict[str, Any]:
    timeout = redis_timeout(settings, role)
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def redis_client(url: str, settings: Settings, role: Role) -> redis.Redis:
    """A client with its own connection pool; make it in the process that uses it."""
    return redis.Redis.from_url(url, **_options(settings, role))


def cluster_client(url: str, settings: Settings, role: Role) -> RedisCluster:
    """A Redis Cluster client that starts from the node ``url`` names; one per process.

    It reads the slot map from that node when made, so the node must answer then.

    Raises:
        redis.exceptions.RedisClusterException: no node answered with a slot map.
    """
    return RedisCluster.from_url(url, **_options(settings, role))


def statistics(settings: Settings, role: Role) -> Storage:
    """The storage of statistics, catalogue, attribution and journal on ``REDIS_URL``."""
    if settings.redis_cluster:
        # Storage is typed for redis.Redis; RedisCluster answers the same commands, keyed by
        # the hash tags of core.storage.keys, and core.storage.scripts.batch runs its batches.
        client = cast(redis.Redis, cluster_client(settings.redis_url, settings, role))
    else:
        client = redis.Redis.from_url(settings.redis_url, redis_connect_func=load_on_connect,
                                      **_options(settings, role))  # fmt: skip
    return Storage(
        client, settings.key_prefix, settings.decision_log_maxlen, settings.forum_window,
        journal_replicas=settings.journal_replicas, journal_wait_ms=journal_wait_ms(settings, role),
        half_life=settings.half_life_seconds,
    )  # fmt: skip


def journal_wait_ms(settings: Settings, role: Role) -> int:
    """How long a journal write waits for its replicas: half the Redis timeout of ``role``, so
    that the reply of WAIT still arrives within that timeout."""
    return max(1, int(redis_timeout(settings, role) * 500))


def broker(settings: Settings, role: Role) -> redis.Redis:
    """The Celery broker's Redis (``CELERY_BROKER_URL``), read for the queue's depth and head:
    with Sentinel, the master that the sentinels name at each new connection."""
    if settings.broker_url.startswith(SENTINEL_SCHEME):
        return sentinel_master(settings, role)
    return redis_client(settings.broker_url, settings, role)


def broker_probe(settings: Settings) -> redis.Redis:
    """A broker client for one look at start-up: the web tier's timeout, no retries, so that
    a hung broker delays no process by more than that."""
    once = {"retry": Retry(NoBackoff(), 0)}
    if settings.broker_url.startswith(SENTINEL_SCHEME):
        return sentinel_master(settings, "web", **once)
    return redis.Redis.from_url(settings.broker_url, **_options(settings, "web"), **once)


def sentinel_master(settings: Settings, role: Role, **extra: Any) -> redis.Redis:
    """A client of the master ``BANDIT_BROKER_MASTER_NAME`` that the sentinels of the broker
    URL name, in the database and with the password of its first part (as kombu reads it)."""
    first = urlsplit(settings.broker_url.split(";")[0])
    timeout = redis_timeout(settings, role)
    sentinels = Sentinel(
        sentinel_addresses(settings.broker_url),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )
    return sentinels.master_for(
        settings.broker_master_name,
        db=int(first.path.strip("/") or 0),
        password=first.password,
        **_options(settings, role),
        **extra,
    )
