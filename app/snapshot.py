"""The in-memory statistics snapshot that the request path reads.

Reading every candidate's statistics from Redis on each request would cost far more than the
Thompson draw itself, and statistics a second old cost no measurable regret, so each web process
keeps a snapshot that a background thread refreshes every ``BANDIT_REFRESH_SECONDS``. The last
good snapshot also serves, marked degraded, while Redis is unreachable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from app import metrics
from app.storage import ForumCatalog
from bandits import Candidates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Candidates and their statistics as of ``built_at`` (unix seconds)."""

    built_at: float
    forum_ids: list[str]
    forum_index: dict[str, int]
    post_ids: list[str]
    post_index: dict[str, int]
    expires_at: np.ndarray
    candidates: Candidates

    @property
    def size(self) -> int:
        return len(self.post_ids)

    @property
    def live_forums(self) -> int:
        """Forums with at least one post in the snapshot."""
        return int(np.unique(self.candidates.post_forum).size)


def build_snapshot(catalog: Sequence[ForumCatalog], built_at: float) -> Snapshot:
    """Flatten per-forum reads into the arrays the policies take."""
    forum_ids = [forum.forum_id for forum in catalog]
    post_ids = [post for forum in catalog for post in forum.post_ids]
    sizes = [len(forum.post_ids) for forum in catalog]
    candidates = Candidates(
        post_forum=np.repeat(np.arange(len(catalog), dtype=np.intp), sizes),
        post_impressions=_flat(catalog, "impressions"),
        post_clicks=_flat(catalog, "clicks"),
        forum_impressions=np.array([f.total_impressions for f in catalog], dtype=np.float64),
        forum_clicks=np.array([f.total_clicks for f in catalog], dtype=np.float64),
    )
    return Snapshot(
        built_at=built_at,
        forum_ids=forum_ids,
        forum_index={forum_id: i for i, forum_id in enumerate(forum_ids)},
        post_ids=post_ids,
        post_index={post_id: i for i, post_id in enumerate(post_ids)},
        expires_at=_flat(catalog, "expires_at"),
        candidates=candidates,
    )


def _flat(catalog: Sequence[ForumCatalog], attr: str) -> np.ndarray:
    parts = [np.asarray(getattr(forum, attr), dtype=np.float64) for forum in catalog]
    return np.concatenate(parts) if parts else np.zeros(0)


class SnapshotCache:
    """Holds the current snapshot of this process and refreshes it in a daemon thread.

    The thread is started lazily in the process that first asks, so it survives gunicorn's fork.
    """

    def __init__(self, load: Callable[[], Snapshot], interval: float) -> None:
        self._load = load
        self._interval = interval
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._owner_pid = 0
        self._stop = threading.Event()

    def get(self) -> Snapshot | None:
        """The current snapshot; loads one synchronously when there is none yet.

        Returns None only when no snapshot was ever loaded and Redis is unreachable.
        """
        self._ensure_thread()
        if self._snapshot is None:
            self.refresh()
        return self._snapshot

    def refresh(self) -> bool:
        """Load a new snapshot now; False (and the old one kept) when Redis fails."""
        started = time.perf_counter()
        try:
            snapshot = self._load()
        except redis.RedisError as exc:
            log.warning("snapshot refresh failed: %s", exc)
            metrics.REDIS_ERRORS.labels(operation="snapshot").inc()
            return False
        metrics.SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
        metrics.LIVE_POSTS.set(snapshot.size)
        metrics.LIVE_FORUMS.set(snapshot.live_forums)
        self._snapshot = snapshot
        metrics.SNAPSHOT_TIMESTAMP.set(snapshot.built_at)
        return True

    def stop(self) -> None:
        self._stop.set()

    def _ensure_thread(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            self._owner_pid = os.getpid()
            self._snapshot = None
            self._stop = threading.Event()
            thread = threading.Thread(target=self._run, name="snapshot-refresh", daemon=True)
            thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()
