"""The incremental statistics snapshot against a real Redis: every kind of change is reflected,
and a snapshot refreshed incrementally equals one read from scratch."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.snapshot import Refresher, Snapshot
from core.storage import Storage

HOUR = 3600.0


def put(storage: Storage, post_id: str, forum_id: str, expires_in: float = HOUR) -> None:
    now = time.time()
    storage.catalogue.put_post(post_id, forum_id, now, now + expires_in, retention=60)


def event(storage: Storage, kind: str, post_id: str, forum_id: str, request_id: str) -> None:
    storage.counting.apply_events(kind, [(request_id, post_id, forum_id)], 60)


def content(snap: Snapshot) -> dict[str, Any]:
    """post id -> (forum, impressions, clicks), and forum -> totals."""
    cands = snap.candidates
    items = snap.items(np.arange(snap.size))
    posts = {
        post_id: (forum_id, cands.post_impressions[i], cands.post_clicks[i])
        for i, (post_id, forum_id) in enumerate(items)
    }
    totals = {
        forum: (cands.forum_impressions[i], cands.forum_clicks[i])
        for i, forum in enumerate(snap.forum_ids[: cands.n_forums])
    }
    return {"posts": posts, "forums": totals}


def test_a_refresh_reads_only_the_changes(storage: Storage) -> None:
    storage.snapshots.changes_overlap_us = 0  # exactly what changed, not the last second again
    put(storage, "p1", "f1")
    put(storage, "p2", "f1")
    (full,) = storage.snapshots.read_forums(["f1"], time.time())
    assert full.posts is not None and sorted(full.posts.post_ids) == ["p1", "p2"]
    cursors = {"f1": full.cursor}
    (unchanged,) = storage.snapshots.read_changes(cursors, time.time())
    assert unchanged.posts is None and unchanged.cursor >= full.cursor
    event(storage, "c", "p1", "f1", "r1")
    put(storage, "p3", "f1")
    storage.catalogue.delete_post("p2", time.time())
    (read,) = storage.snapshots.read_changes(cursors, time.time())
    assert read.posts is not None and read.cursor > full.cursor
    posts = read.posts
    states = {
        post_id: (posts.impressions[i], posts.clicks[i], posts.expires_at[i])
        for i, post_id in enumerate(posts.post_ids)
    }
    assert set(states) == {"p1", "p2", "p3"}
    assert states["p1"][:2] == (1, 1) and states["p3"][:2] == (0, 0)
    assert math.isnan(states["p2"][2]) and states["p3"][2] > time.time()
    assert read.policy_counts == (1, 1)


def test_every_kind_of_change_reaches_the_snapshot(storage: Storage) -> None:
    refresh = Refresher(storage)
    for post_id in ("a1", "a2", "a3", "a4"):
        put(storage, post_id, "fa")
    before = refresh()
    assert set(content(before)["posts"]) == {"a1", "a2", "a3", "a4"}
    event(storage, "i", "a1", "fa", "r1")  # a changed count
    event(storage, "c", "a1", "fa", "r1")
    put(storage, "a5", "fa")  # a new post
    put(storage, "b1", "fb")  # a new forum
    put(storage, "a2", "fa", expires_in=-1)  # an expired post
    storage.catalogue.delete_post("a3", time.time())  # a withdrawn post
    after = content(refresh())
    assert set(after["posts"]) == {"a1", "a4", "a5", "b1"}
    assert after["posts"]["a1"] == ("fa", 1, 1)
    assert after["posts"]["b1"] == ("fb", 0, 0)
    assert after["forums"] == {"fa": (1, 1), "fb": (0, 0)}
    assert content(Refresher(storage)()) == after


@pytest.mark.parametrize(("window", "forums"), [(2, (3.0, 1.0)), (0, (5.0, 2.0))])
def test_the_policy_gets_the_windowed_forum_counts(
    storage: Storage, window: int, forums: tuple[float, float]
) -> None:
    storage = Storage(storage.client, "pb", forum_window=window)
    refresh = Refresher(storage)
    put(storage, "p1", "f1")
    put(storage, "p2", "f1")
    refresh()
    for request in ("r1", "r2", "r3", "r4"):
        event(storage, "i", "p1", "f1", request)
    event(storage, "c", "p1", "f1", "r1")  # the 1st impression: in the window
    event(storage, "c", "p1", "f1", "r4")  # the 4th: out of it
    event(storage, "i", "p2", "f1", "r1")
    incremental = content(refresh())
    assert incremental["posts"] == {"p1": ("f1", 4, 2), "p2": ("f1", 1, 0)}
    assert incremental["forums"] == {"f1": forums}
    assert content(Refresher(storage)()) == incremental


def test_an_unchanged_catalogue_keeps_its_candidates(storage: Storage) -> None:
    refresh = Refresher(storage)
    put(storage, "p1", "f1")
    first = refresh()
    second = refresh()
    assert second.candidates is first.candidates and second.built_at >= first.built_at
    event(storage, "i", "p1", "f1", "r1")
    assert refresh().candidates is not first.candidates


def test_posts_expiring_after_the_refresh_are_excluded(storage: Storage) -> None:
    put(storage, "soon", "f1", expires_in=30)
    put(storage, "later", "f1")
    snap = Refresher(storage)()
    assert snap.excluded([], time.time()) is None
    excluded = snap.excluded([], time.time() + 60)
    assert excluded is not None and snap.items(excluded) == [("soon", "f1")]
    listed = snap.excluded(["later", "unknown"], time.time())
    assert listed is not None and snap.items(listed) == [("later", "f1")]


def test_a_reader_too_late_for_the_change_log_reads_everything(
    storage: Storage, rclient: redis.Redis
) -> None:
    storage = Storage(storage.client, "pb", changes_keep_seconds=0.2)  # forgets after 0.2 s
    refresh = Refresher(storage)
    put(storage, "p1", "f1")
    put(storage, "p2", "f1")
    refresh()
    event(storage, "i", "p1", "f1", "r1")
    time.sleep(0.3)
    put(storage, "p3", "f1")  # a new entry: the log forgets the older ones, p1's change too
    event(storage, "i", "p2", "f1", "r1")
    assert sorted(rclient.zrange(storage.keys.changes("f1"), 0, -1)) == [b"p2", b"p3"]
    posts = content(refresh())["posts"]
    assert posts["p1"] == ("f1", 1, 0) and posts["p2"] == ("f1", 1, 0)


def test_a_change_noted_with_a_clock_behind_the_read_is_read_next_time(
    storage: Storage, rclient: redis.Redis
) -> None:
    put(storage, "p1", "f1")
    put(storage, "p2", "f1")
    (full,) = storage.snapshots.read_forums(["f1"], time.time())
    (seconds, micros) = rclient.time()
    assert full.cursor <= seconds * 1_000_000 + micros - storage.snapshots.changes_overlap_us
    # As if p1 and p2 changed after that read, noted by a server clock that had stepped back
    # by half a second and by nearly the whole margin: both come with the next read.
    margin = storage.snapshots.changes_overlap_us
    rclient.zadd(
        storage.keys.changes("f1"), {"p1": full.cursor + margin / 2, "p2": full.cursor + 1}
    )
    rclient.hincrby(storage.keys.stats("f1"), "i:p1", 1)
    (read,) = storage.snapshots.read_changes({"f1": full.cursor}, time.time())
    assert read.posts is not None and sorted(read.posts.post_ids) == ["p1", "p2"]
    assert read.posts.impressions[read.posts.post_ids.index("p1")] == 1


OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "expire", "withdraw", "impression", "click", "refresh"]),
        st.integers(0, 7),  # post
        st.integers(0, 3),  # request
    ),
    max_size=40,
)


@dataclass
class Model:
    """What the snapshot should hold, tracked in plain Python."""

    live: dict[str, bool] = field(default_factory=dict)
    withdrawn: set[str] = field(default_factory=set)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    # Counts of posts registered anew (counted before, in this test): the forum totals keep them.
    removed: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def register(self, post_id: str, live: bool) -> None:
        """A post registered for the first time starts with no counts of its own."""
        if post_id not in self.live:
            imps, clicks = self.counts.pop(post_id, [0, 0])
            self.removed[forum_of(post_id)][0] += imps
            self.removed[forum_of(post_id)][1] += clicks
        self.live[post_id] = live

    def count(self, kind: str, post_id: str, request: str) -> None:
        """An event counts once per (kind, post, request); a click counts its impression."""
        for k in ("i", "c") if kind == "c" else ("i",):
            if (k, post_id, request) not in self.seen:
                self.seen.add((k, post_id, request))
                self.counts[post_id][k == "c"] += 1

    def expected(self) -> dict[str, Any]:
        forums = {forum_of(p) for p in self.live}
        totals = {f: list(self.removed[f]) for f in forums}
        for post_id, (imps, clicks) in self.counts.items():
            if forum_of(post_id) in totals:
                totals[forum_of(post_id)][0] += imps
                totals[forum_of(post_id)][1] += clicks
        return {
            "posts": {p: (forum_of(p), *self.counts[p]) for p, live in self.live.items() if live},
            "forums": {f: tuple(t) for f, t in totals.items()},
        }


def forum_of(post_id: str) -> str:
    return f"f{int(post_id[1:]) % 3}"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_incremental_refreshes_equal_the_model_and_a_full_read(
    storage: Storage, rclient: redis.Redis, ops: list[tuple[str, int, int]]
) -> None:
    rclient.flushdb()
    refresh = Refresher(storage)
    refresh()
    model = Model()
    for op, n, request in ops:
        post_id = f"p{n}"
        if op == "refresh":
            refresh()
        elif op in ("put", "expire") and post_id not in model.withdrawn:
            put(storage, post_id, forum_of(post_id), HOUR if op == "put" else -1)
            model.register(post_id, op == "put")
        elif op == "withdraw" and storage.catalogue.delete_post(post_id, time.time()):
            model.withdrawn.add(post_id)
            model.live[post_id] = False
        elif op in ("impression", "click"):
            event(storage, op[0], post_id, forum_of(post_id), f"r{request}")
            model.count(op[0], post_id, f"r{request}")
    incremental = content(refresh())
    assert incremental == model.expected()
    assert incremental == content(Refresher(storage)())
