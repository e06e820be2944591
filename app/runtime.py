"""Per-process resources of the web tier, kept in ``app.extensions["postbandit"]``.

Redis connection pool, statistics snapshot, random generator and Celery producer are all
created lazily in the process that uses them, so nothing is shared across gunicorn's fork.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import redis
from celery import Celery
from flask import Flask, current_app

from app.snapshot import Refresher, SnapshotCache
from bandits import make_policy
from bandits.policies import Policy
from core.queue import make_celery
from core.settings import Settings
from core.storage import Storage


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    broker: redis.Redis  # the Celery broker's Redis, read for the queue depth
    snapshots: SnapshotCache
    policy: Policy
    celery: Celery
    _rng: np.random.Generator | None = field(default=None, repr=False)
    _rng_pid: int = 0

    @property
    def rng(self) -> np.random.Generator:
        """One generator per process, seeded after fork (else all workers draw alike)."""
        if self._rng is None or self._rng_pid != os.getpid():
            seed = self.settings.seed + os.getpid() if self.settings.seed else None
            self._rng = np.random.default_rng(seed)
            self._rng_pid = os.getpid()
        return self._rng


def _redis(url: str, settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )


def make_runtime(settings: Settings) -> Runtime:
    client = _redis(settings.redis_url, settings)
    storage = Storage(
        client, settings.key_prefix, settings.decision_log_maxlen, settings.forum_window
    )

    policy = make_policy(settings.policy, **settings.policy_params())
    return Runtime(
        settings=settings,
        storage=storage,
        broker=_redis(settings.broker_url, settings),
        snapshots=SnapshotCache(Refresher(storage), settings.refresh_seconds),
        policy=policy,
        celery=make_celery(settings, role="web"),
    )


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["postbandit"] = make_runtime(settings)


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["postbandit"]
    return rt
