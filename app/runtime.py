"""Per-process resources of the web tier, kept in ``app.extensions["postbandit"]``.

Redis connection pools, statistics snapshot, random generator and Celery producer are all
created lazily in the process that uses them, so nothing is shared across gunicorn's fork;
gunicorn loads each worker's snapshot before the worker takes requests (:func:`start`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import redis
from celery import Celery
from flask import Flask, current_app

from app.plans import Plans
from app.slate_writer import SlateWriter
from app.snapshot import Refresher, SnapshotCache
from app.snapshot_file import snapshot_file
from bandits import make_policy
from bandits.policies import Policy
from core import clients
from core.process import PerProcess
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
    generators: PerProcess[np.random.Generator]
    slates: SlateWriter  # the served slates, written behind the responses

    @property
    def rng(self) -> np.random.Generator:
        """This process's generator (seeded after fork, else all workers draw alike)."""
        return self.generators.get()


def make_runtime(settings: Settings) -> Runtime:
    storage = clients.statistics(settings, "web")
    policy = make_policy(settings.policy, **settings.policy_params())
    refresher = Refresher(storage, Plans(policy, settings.half_life_seconds))
    return Runtime(
        settings=settings,
        storage=storage,
        broker=clients.broker(settings, "web"),
        snapshots=SnapshotCache(
            refresher, settings.refresh_seconds, snapshot_file(settings), refresher.with_samplers
        ),
        policy=policy,
        celery=make_celery(settings, role="web"),
        generators=PerProcess(lambda: _generator(settings.seed)),
        slates=SlateWriter(storage.serving.steps, settings.slate_flush_seconds),
    )


def _generator(seed: int) -> np.random.Generator:
    """A fixed ``seed`` still differs per process (by its pid); 0 takes entropy from the OS."""
    return np.random.default_rng(seed + os.getpid() if seed else None)


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["postbandit"] = make_runtime(settings)


def start(app: Flask) -> None:
    """Load this process's snapshot before it serves (from Redis, else the snapshot file) and
    start its refresh; called in each gunicorn worker before it takes requests."""
    rt: Runtime = app.extensions["postbandit"]
    rt.snapshots.start()


def stop(app: Flask) -> None:
    """Write every slate this process served and still holds; called in each gunicorn worker
    as it exits (after SIGTERM, once its requests are answered)."""
    rt: Runtime = app.extensions["postbandit"]
    rt.slates.stop()


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["postbandit"]
    return rt
