"""The last good snapshot on local disk, for a web process that starts while Redis is down.

A web process keeps its snapshot in memory, so one that gunicorn starts during a Redis outage
(a replacement for a dead worker, a deploy) would have nothing to serve from. Every process
that refreshes from Redis therefore also writes its snapshot to a file at most every
``SAVE_EVERY_SECONDS`` (skipping the write when a sibling wrote the file more recently), and a
process that cannot read Redis at start serves from that file, degraded, until Redis is back.

The file is numpy's ``.npz`` without pickles, with a format version: ids as newline-joined
UTF-8 bytes (ids never contain a newline, see app.schemas), the candidates' arrays as they
are. It is written to a temporary file and renamed over the old one, so a reader never sees a
half-written file and concurrent writers only race to which complete file wins. A file that
does not parse, has another format version or is older than ``MAX_AGE_SECONDS`` is ignored
with a warning. The file name is derived from the Redis URL and key prefix, so services that
share the directory never read each other's statistics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from app.snapshot_data import Snapshot
from bandits import Candidates
from core.settings import Settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
SAVE_EVERY_SECONDS = 10.0
# Counts a day old still rank better than nothing; older files are more likely left over
# from another deployment than the last state of this one.
MAX_AGE_SECONDS = 86_400.0
_ARRAYS = ("post_forum", "post_impressions", "post_clicks", "forum_impressions", "forum_clicks",
           "post_created_at")  # fmt: skip
# With decayed counts (BANDIT_HALF_LIFE_SECONDS): when they were counted, and read.
_TIMES = ("post_counted_at", "forum_counted_at", "as_of")
_BAD_FILE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def snapshot_file(settings: Settings) -> SnapshotFile | None:
    """The snapshot file of this service, or None when ``BANDIT_SNAPSHOT_DIR`` is empty."""
    if not settings.snapshot_dir:
        return None
    service = f"{settings.redis_url}\n{settings.key_prefix}".encode()
    name = f"snapshot-{hashlib.sha256(service).hexdigest()[:16]}.npz"
    return SnapshotFile(Path(settings.snapshot_dir) / name)


class SnapshotFile:
    """One snapshot file: :meth:`save` the last good snapshot, :meth:`load` it back."""

    def __init__(
        self, path: Path, save_every: float = SAVE_EVERY_SECONDS, max_age: float = MAX_AGE_SECONDS
    ) -> None:
        self.path = path
        self.save_every = save_every
        self.max_age = max_age
        self._saved_at = -math.inf

    def save_if_due(self, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` unless this process or another wrote one within ``save_every``
        seconds; whether it was written. A failed write is logged, never raised."""
        now = time.time()
        if now - self._saved_at < self.save_every or now - self._modified() < self.save_every:
            return False
        self._saved_at = now
        try:
            self.save(snapshot)
        except OSError as exc:
            extra = {"path": str(self.path), "error": str(exc)}
            log.warning("could not write the snapshot file", extra=extra)
            return False
        return True

    def save(self, snapshot: Snapshot) -> None:
        """Replace the file with ``snapshot`` atomically.

        Raises:
            OSError: the directory cannot be made or written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".snapshot-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, allow_pickle=False, **_arrays(snapshot))
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def load(self) -> Snapshot | None:
        """The saved snapshot; None when there is none, or it is unreadable or too old."""
        try:
            # Opened here: np.load leaks the file it opened when the file is not a zip.
            with self.path.open("rb") as raw, np.load(raw, allow_pickle=False) as data:
                snapshot = _snapshot(data)
        except FileNotFoundError:
            return None
        except _BAD_FILE as exc:
            extra = {"path": str(self.path), "error": repr(exc)}
            log.warning("ignoring an unreadable snapshot file", extra=extra)
            return None
        age = time.time() - snapshot.built_at
        if not 0 <= age <= self.max_age:
            log.warning("ignoring a snapshot file too old (or from the future)",
                        extra={"path": str(self.path), "age_seconds": round(age)})  # fmt: skip
            return None
        return snapshot

    def _modified(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:  # missing, or not reachable: the write will say why
            return -math.inf


def _arrays(snapshot: Snapshot) -> dict[str, np.ndarray]:
    cands = snapshot.candidates
    post_ids = [snapshot.post_ids[r] for r in snapshot.rows.tolist()]
    return {
        "version": np.array([FORMAT_VERSION]),
        "built_at": np.array([snapshot.built_at]),
        "forum_ids": _join(snapshot.forum_ids[: cands.n_forums]),
        "post_ids": _join(post_ids),
        "expires_at": np.asarray(snapshot.expires_at, np.float64),
        **{name: np.asarray(getattr(cands, name)) for name in _ARRAYS},
        **{name: np.asarray(getattr(cands, name)) for name in _TIMES if cands.as_of is not None},
    }


def _snapshot(data: np.lib.npyio.NpzFile) -> Snapshot:
    """The snapshot in ``data``.

    Raises:
        ValueError: another format version, or arrays that do not fit together.
        KeyError: an array is missing.
    """
    if data["version"].tolist() != [FORMAT_VERSION]:
        raise ValueError(f"format version {data['version'].tolist()}, not {FORMAT_VERSION}")
    forum_ids, post_ids = _split(data["forum_ids"]), _split(data["post_ids"])
    built_at, counts = float(data["built_at"][0]), {name: data[name] for name in _ARRAYS}
    candidates = Candidates(**counts, **_times(data, counts, built_at))
    expires_at = np.asarray(data["expires_at"], np.float64)
    if not len(post_ids) == candidates.n_posts == expires_at.shape[0]:
        raise ValueError("post ids, candidates and expiries differ in length")
    if len(forum_ids) != candidates.n_forums:
        raise ValueError("forum ids and forum counts differ in length")
    rows = np.arange(len(post_ids), dtype=np.intp)
    return Snapshot(
        built_at=built_at, forum_ids=forum_ids,
        forum_index={f: i for i, f in enumerate(forum_ids)}, post_ids=post_ids,
        post_index={p: i for i, p in enumerate(post_ids)}, rows=rows, candidate_of_row=rows,
        expires_at=expires_at, next_expiry=float(expires_at.min()) if rows.size else math.inf,
        candidates=candidates,
    )  # fmt: skip


def _times(
    data: np.lib.npyio.NpzFile, counts: dict[str, np.ndarray], built_at: float
) -> dict[str, Any]:
    """When the file's counts were counted: as saved, or (exact counts) at ``built_at``, so
    that a policy with a half-life reads them too, as they were then."""
    if all(name in data.files for name in _TIMES):
        saved = {name: data[name] for name in _TIMES}
        return {**saved, "as_of": float(saved["as_of"])}
    n_posts, n_forums = len(counts["post_forum"]), len(counts["forum_impressions"])
    return {"post_counted_at": np.full(n_posts, built_at),
            "forum_counted_at": np.full(n_forums, built_at), "as_of": built_at}  # fmt: skip


def _join(ids: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(ids).encode(), np.uint8)


def _split(data: np.ndarray) -> list[str]:
    text = np.asarray(data, np.uint8).tobytes().decode()
    return text.split("\n") if text else []
