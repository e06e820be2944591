"""The in-memory statistics snapshot that the request path reads.

Reading every candidate's statistics from Redis on each request would cost far more than the
Thompson draw itself, and statistics a second old cost no measurable regret, so each web process
keeps a snapshot that a background thread refreshes every ``BANDIT_REFRESH_SECONDS``. The last
good snapshot also serves, marked degraded, while Redis is unreachable; a process that starts
while Redis is unreachable serves from the last good snapshot on disk (app.snapshot_file).

A refresh reads only the posts that changed since the previous one (Redis keeps a change log
per forum, see core.storage) into this process's :class:`Catalogue`, a set of growable arrays,
and then builds the candidates' arrays with numpy: no Python work per unchanged post. Every
``FULL_RELOAD_SECONDS`` the catalogue is read afresh, which also drops withdrawn and expired
posts from its arrays.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.plans import Arm, Plan, Plans
from app.samplers import build_samplers
from app.snapshot_data import Snapshot
from app.variant_arrays import VariantArrays, count_times, valid, variant_read
from bandits import Candidates
from core import metrics
from core.process import PerProcess
from core.storage import ForumRead, PostStates, Storage
from core.storage.errors import REDIS_ERRORS
from core.storage.records import VariantCounts
from core.storage.snapshot_reads import VariantRead

if TYPE_CHECKING:
    from app.snapshot_file import SnapshotFile

log = logging.getLogger(__name__)

FULL_RELOAD_SECONDS = 300.0


class Catalogue:
    """Every post this process has read, as growable arrays; owned by the refresh thread.

    Rows are only appended (a withdrawn post's row stays, with expiry NaN), so a snapshot
    keeps valid row numbers while the catalogue moves on. With ``experiment``, the catalogue
    also keeps its variants' counts (:class:`app.variant_arrays.VariantArrays`); with an
    ``anchor``, decayed counts at that time (unix seconds, core.storage.snapshot_reads).
    """

    def __init__(self, experiment: VariantRead | None = None, anchor: float | None = None) -> None:
        self.experiment = experiment
        self.anchor = anchor
        self.variants = None if experiment is None else VariantArrays(experiment)
        self.forum_ids: list[str] = []
        self.forum_index: dict[str, int] = {}
        self.forum_counts: list[tuple[float, float]] = []
        self.cursors: dict[str, float] = {}
        self.post_ids: list[str] = []
        self.post_index: dict[str, int] = {}
        self._forum = np.zeros(0, np.intp)
        self._expires = np.zeros(0)
        self._created = np.zeros(0)
        self._counts = np.zeros((0, 2))
        self.changed = True

    def new_posts(self, reads: Sequence[ForumRead]) -> list[tuple[str, str]]:
        """The live posts of ``reads`` that the catalogue has no row for yet, with their forum."""
        return [
            (post_id, read.forum_id)
            for read in reads
            if read.posts is not None
            for post_id, expires in zip(read.posts.post_ids, read.posts.expires_at, strict=True)
            if post_id not in self.post_index and not math.isnan(expires)
        ]

    def apply(self, reads: Sequence[ForumRead], created_at: Mapping[str, float]) -> None:
        """Take in what a read found: the forums' counts as the policy takes them (windowed
        with a forum window, see core.storage), cursors and the posts' current state;
        ``created_at`` holds the creation time of the new posts (:meth:`new_posts`)."""
        for read in reads:
            forum = self.forum_index.get(read.forum_id)
            if forum is None:
                forum = self.forum_index[read.forum_id] = len(self.forum_ids)
                self.forum_ids.append(read.forum_id)
                self.forum_counts.append(read.policy_counts)
                self.changed = True
            if self.forum_counts[forum] != read.policy_counts:
                self.forum_counts[forum] = read.policy_counts
                self.changed = True
            if self.variants is not None:
                self.changed |= self.variants.set_forum(forum, read.variants)
            self.cursors[read.forum_id] = read.cursor
            if read.posts is not None and read.posts.post_ids:
                self.changed |= self._apply_posts(forum, read.posts, created_at, read.variants)

    def _apply_posts(
        self, forum: int, posts: PostStates, created_at: Mapping[str, float],
        variants: Mapping[str, VariantCounts],
    ) -> bool:  # fmt: skip
        """Update or add the posts' rows (and their variants' counts); whether anything
        differs from before."""
        index = self.post_index
        rows = np.fromiter((index.get(p, -1) for p in posts.post_ids), np.intp, len(posts.post_ids))
        expires = np.array(posts.expires_at)  # NaN once withdrawn: never > now, never a candidate
        new = np.flatnonzero((rows < 0) & ~np.isnan(expires))
        if new.size:
            rows[new] = self._append([posts.post_ids[i] for i in new], forum, created_at)
        known = rows[rows >= 0]
        varied = self.variants is not None and self.variants.set_posts(known, rows >= 0, variants)
        expires = expires[rows >= 0]
        counts = np.column_stack([posts.impressions, posts.clicks]).astype(np.float64)[rows >= 0]
        same = np.array_equal(self._expires[known], expires, equal_nan=True) and np.array_equal(
            self._counts[known], counts
        )
        self._expires[known] = expires
        self._counts[known] = counts
        return bool(new.size) or not same or varied

    def _append(
        self, post_ids: list[str], forum: int, created_at: Mapping[str, float]
    ) -> np.ndarray:
        """Rows for new posts; a post whose creation time is unknown counts as the oldest."""
        start, end = len(self.post_ids), len(self.post_ids) + len(post_ids)
        if end > self._forum.shape[0]:
            capacity = max(1024, 2 * end)
            self._forum = np.resize(self._forum, capacity)
            self._expires = np.resize(self._expires, capacity)
            self._created = np.resize(self._created, capacity)
            self._counts = np.resize(self._counts, (capacity, 2))
            if self.variants is not None:
                self.variants.grow(capacity)
        self._forum[start:end] = forum
        self._created[start:end] = [created_at.get(p, 0.0) for p in post_ids]
        self.post_index.update(zip(post_ids, range(start, end), strict=True))
        self.post_ids.extend(post_ids)
        return np.arange(start, end, dtype=np.intp)

    def snapshot(self, built_at: float, now: float, plan: Plan | None = None) -> Snapshot:
        """The live posts (expiring after ``now``) as candidates, served by ``plan``."""
        n_rows = len(self.post_ids)
        expires = self._expires[:n_rows]
        rows = np.flatnonzero(expires > now)
        candidate_of_row = np.full(n_rows, -1, np.intp)
        candidate_of_row[rows] = np.arange(rows.shape[0])
        forum_counts, counts = valid(np.array(self.forum_counts)), valid(self._counts[rows])
        times = count_times(self.anchor, rows.shape[0], forum_counts.shape[0], built_at)
        candidates = Candidates(
            post_forum=self._forum[rows], post_impressions=counts[:, 0],
            post_clicks=counts[:, 1], forum_impressions=forum_counts[:, 0],
            forum_clicks=forum_counts[:, 1], post_created_at=self._created[rows], **times,
        )  # fmt: skip
        live_expiry = expires[rows]
        views = {} if self.variants is None else self.variants.candidates(candidates, rows)
        self.changed = False
        return Snapshot(
            built_at=built_at, forum_ids=self.forum_ids, forum_index=self.forum_index,
            post_ids=self.post_ids, post_index=self.post_index, rows=rows,
            candidate_of_row=candidate_of_row, expires_at=live_expiry,
            next_expiry=float(live_expiry.min()) if rows.size else math.inf,
            candidates=candidates, plan=plan, variant_candidates=views,
        )  # fmt: skip


@dataclass
class _Loaded:
    """What one process's refresher has read; a forked child starts again from nothing."""

    catalogue: Catalogue | None = None
    previous: Snapshot | None = None
    full_at: float = 0.0
    read_at: float = 0.0


class Refresher:
    """Loads snapshots for one process: the changes since the last read, or everything every
    ``FULL_RELOAD_SECONDS`` (and when the last read is too old for the change log).

    Each refresh also reads what serves (one command: the running experiment, the promoted
    policy) and gives it to ``plans``, which rebuilds the policies only when it changed
    (without ``plans``, snapshots carry no plan: the configured policy serves).
    New posts' creation times are read once, when the catalogue first takes them in.
    """

    def __init__(
        self, storage: Storage, plans: Plans | None = None, full_every: float = FULL_RELOAD_SECONDS
    ) -> None:
        self.storage = storage
        self.plans = plans
        self.full_every = full_every
        self._loaded = PerProcess(_Loaded)

    def __call__(self) -> Snapshot:
        """A snapshot as of now.

        Raises:
            redis.RedisError: Redis failed; the process keeps its state for the next try.
        """
        started, now, reads = time.monotonic(), time.time(), self.storage.snapshots
        state = None if self.plans is None else self.storage.experiments.serving()
        experiment = variant_read(state)
        loaded = self._loaded.get()
        catalogue = loaded.catalogue
        if (
            catalogue is None or self._full_due(loaded, started)
            or catalogue.experiment != experiment
        ):  # fmt: skip
            # A new experiment's variants are read in full, and a stopped one's dropped.
            catalogue = Catalogue(experiment, now if reads.half_life else None)
            self._take(catalogue, reads.read_changes({}, now, experiment, now))
            loaded.catalogue, loaded.full_at, loaded.previous = catalogue, started, None
        else:
            anchor = catalogue.anchor or 0.0
            self._take(catalogue, reads.read_changes(catalogue.cursors, now, experiment, anchor))
        plan = None if self.plans is None or state is None else self.plans(state)
        loaded.read_at = started
        previous = loaded.previous
        # Decayed counts fall with time: each refresh builds their snapshot again, at its time.
        unchanged = not catalogue.changed and catalogue.anchor is None
        if previous is not None and unchanged and time.time() < previous.next_expiry:
            snapshot = dataclasses.replace(previous, built_at=now, plan=plan)
        else:
            snapshot = catalogue.snapshot(now, time.time(), plan)
        loaded.previous = self.with_samplers(snapshot, previous)
        return loaded.previous

    def with_samplers(self, snapshot: Snapshot, previous: Snapshot | None = None) -> Snapshot:
        """``snapshot`` with the pruned draws of the arms its plan serves (app.samplers),
        keeping those of ``previous`` whose candidates and policy it kept. A snapshot without
        a plan (read from the snapshot file) is served by the configured policy of ``plans``;
        without ``plans``, nothing is built (every request draws with its policy)."""
        if snapshot.plan is not None:
            arms = snapshot.plan.serving
        else:
            arms = [] if self.plans is None else [Arm(self.plans.configured)]
        old = {} if previous is None else previous.samplers
        samplers = build_samplers(arms, snapshot.candidates_of, old)
        return dataclasses.replace(snapshot, samplers=samplers)

    def _take(self, catalogue: Catalogue, reads: list[ForumRead]) -> None:
        new = catalogue.new_posts(reads)
        times = self.storage.snapshots.created_at(new)
        created_at = {post_id: at for (post_id, _), at in zip(new, times, strict=True)}
        catalogue.apply(reads, created_at)

    def _full_due(self, loaded: _Loaded, now: float) -> bool:
        return (
            now - loaded.full_at >= self.full_every
            or now - loaded.read_at >= self.storage.snapshots.changes_keep_us / 2e6
        )


class SnapshotCache:
    """Holds the current snapshot of this process and refreshes it in a daemon thread.

    The thread is started in the process that first asks (:meth:`start`, or the first
    :meth:`get`), so it survives gunicorn's fork. Every good snapshot is offered to ``file``,
    which keeps the last one on disk for processes that start while Redis is down; a snapshot
    read back from it goes through ``prepare`` (:meth:`Refresher.with_samplers`) first.
    """

    def __init__(
        self, load: Callable[[], Snapshot], interval: float, file: SnapshotFile | None = None,
        prepare: Callable[[Snapshot], Snapshot] | None = None,
    ) -> None:  # fmt: skip
        self._load = load
        self._interval = interval
        self._file = file
        self._prepare = prepare
        self._snapshot: Snapshot | None = None
        self._file_tried = False
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._thread = PerProcess(self._start_thread)

    def start(self) -> bool:
        """Load this process's first snapshot and start its refresh thread; whether a snapshot
        is loaded. gunicorn calls it before the worker takes requests (gunicorn.conf.py)."""
        return self.get() is not None

    def get(self) -> Snapshot | None:
        """The current snapshot; loads one synchronously when there is none yet: from Redis,
        else (once per process) the last good one from the snapshot file.

        Returns None only when no snapshot was ever loaded, Redis is unreachable and the file
        is missing, unreadable or too old.
        """
        self._ensure_thread()
        if self._snapshot is None and not self.refresh():
            self._load_file()
        return self._snapshot

    def current(self) -> Snapshot | None:
        """The current snapshot, or None when none was loaded yet (never loads one)."""
        return self._snapshot

    def refresh(self) -> bool:
        """Load a new snapshot now; False (and the old one kept) when Redis fails."""
        started = time.perf_counter()
        try:
            with self._refreshing:
                snapshot = self._load()
        except REDIS_ERRORS as exc:
            metrics.redis_failed(log, "snapshot", exc)
            return False
        metrics.SNAPSHOT_SECONDS.observe(time.perf_counter() - started)
        metrics.LIVE_POSTS.set(snapshot.size)
        metrics.LIVE_FORUMS.set(snapshot.live_forums)
        self._snapshot = snapshot
        metrics.SNAPSHOT_TIMESTAMP.set(snapshot.built_at)
        if self._file is not None:
            self._file.save_if_due(snapshot)
        return True

    def _load_file(self) -> None:
        """Take the snapshot file's snapshot, unless Redis gave one meanwhile."""
        if self._file is None or self._file_tried:
            return
        self._file_tried = True
        snapshot = self._file.load()
        if snapshot is not None and self._prepare is not None:
            snapshot = self._prepare(snapshot)
        with self._refreshing:
            if snapshot is None or self._snapshot is not None:
                return
            self._snapshot = snapshot
        extra = {"path": str(self._file.path), "built_at": snapshot.built_at}
        log.warning("serving the last good snapshot from disk until Redis answers", extra=extra)
        metrics.LIVE_POSTS.set(snapshot.size)
        metrics.LIVE_FORUMS.set(snapshot.live_forums)
        metrics.SNAPSHOT_TIMESTAMP.set(snapshot.built_at)

    def stop(self) -> None:
        self._stop.set()

    def _ensure_thread(self) -> None:
        self._thread.get()

    def _start_thread(self) -> threading.Thread:
        """This process's refresh thread; a forked child starts its own, with no snapshot."""
        self._snapshot, self._file_tried = None, False
        self._stop = threading.Event()
        thread = threading.Thread(target=self._run, name="snapshot-refresh", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()
