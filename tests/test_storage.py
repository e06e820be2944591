"""Storage against a real Redis: key layout, atomic idempotent counting, TTLs."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.storage import (
    PostConflict,
    RequestContext,
    Served,
    Storage,
    new_request_id,
    request_time,
)

NOW = 1_700_000_000.0


def put(storage: Storage, post_id: str, forum_id: str, expires: float = NOW + 3600) -> bool:
    return storage.catalogue.put_post(post_id, forum_id, NOW, expires, retention=60)


def test_put_post_registers_candidate_and_forum(storage: Storage) -> None:
    assert put(storage, "p1", "f1") is True
    assert put(storage, "p1", "f1") is False
    record = storage.catalogue.get_post("p1")
    assert record is not None
    assert (record.forum_id, record.impressions, record.clicks) == ("f1", 0, 0)
    assert storage.catalogue.forum_ids() == ["f1"]


def test_post_cannot_change_forum(storage: Storage) -> None:
    put(storage, "p1", "f1")
    with pytest.raises(PostConflict, match="belongs to forum f1"):
        put(storage, "p1", "f2")


def test_withdrawn_post_cannot_come_back(storage: Storage) -> None:
    put(storage, "p1", "f1")
    assert storage.catalogue.delete_post("p1", NOW) is True
    assert storage.catalogue.delete_post("nope", NOW) is False
    with pytest.raises(PostConflict, match="withdrawn"):
        put(storage, "p1", "f1")


def test_catalog_has_only_live_posts(storage: Storage) -> None:
    put(storage, "old", "f1", expires=NOW - 1)
    put(storage, "new", "f1", expires=NOW + 10)
    put(storage, "gone", "f2")
    storage.catalogue.delete_post("gone", NOW)
    catalog = {
        f.forum_id: f.posts
        for f in storage.snapshots.read_forums(storage.catalogue.forum_ids(), NOW)
    }
    assert catalog["f1"] is not None and catalog["f1"].post_ids == ["new"]
    assert catalog["f2"] is not None and catalog["f2"].post_ids == []


def test_keys_share_a_hash_tag_per_forum(storage: Storage) -> None:
    keys = storage.keys
    tags = {
        k[k.index("{") : k.index("}") + 1]
        for k in (keys.live("f1"), keys.stats("f1"), keys.seen("f1", "r"), keys.changes("f1"))
    }
    assert tags == {"{f:f1}"}
    rid = new_request_id("alice")
    assert keys.served(rid) == f"pb:{{u:{rid[12:16]}}}:served:{rid}"
    assert keys.clicked("alice") == f"pb:{{u:{rid[12:16]}}}:clicked:alice"
    with pytest.raises(ValueError, match="not a request id"):
        keys.served("r1")


def serve(storage: Storage, posts: dict[str, str], user: str = "u1") -> str:
    request_id = new_request_id(user)
    storage.serving.serve(Served(request_id, user, "two_level_ts", posts), ttl=60)
    return request_id


def test_events_count_once_and_click_implies_impression(storage: Storage) -> None:
    put(storage, "p1", "f1")
    put(storage, "p2", "f1")
    rid = serve(storage, {"p1": "f1", "p2": "f1"})
    assert storage.counting.apply_events("i", [(rid, "p1", "f1"), (rid, "p1", "f1")], 60) == [1, 0]
    assert storage.counting.apply_events("c", [(rid, "p2", "f1")], 60) == [2]
    assert storage.counting.apply_events("i", [(rid, "p2", "f1")], 60) == [0]
    assert storage.counting.apply_events("c", [(rid, "p2", "f1")], 60) == [0]
    (forum,) = storage.snapshots.read_forums(["f1"], NOW)
    assert forum.posts is not None
    posts = forum.posts
    assert dict(
        zip(posts.post_ids, zip(posts.impressions, posts.clicks, strict=True), strict=True)
    ) == {"p1": (1, 0), "p2": (1, 1)}
    assert forum.policy_counts == (2, 1)


def test_the_posts_to_hide_are_read_in_one_step_and_a_slate_is_remembered_as_served(
    storage: Storage, rclient: redis.Redis
) -> None:
    storage = Storage(rclient, "pb", decision_log_maxlen=10)
    put(storage, "p1", "f1")
    storage.serving.remember_clicks([("u1", "clicked")], NOW, 3600)
    storage.catalogue.delete_post("p1", NOW)
    found = storage.serving.to_hide("u1", NOW - 60, NOW - 5)
    assert (found.clicked, found.withdrawn, found.shown) == (["clicked"], ["p1"], [])
    assert storage.serving.to_hide("u2", NOW - 60, NOW - 5).clicked == []  # another member
    # The click and the withdrawal are older: nothing to hide.
    assert storage.serving.to_hide("u1", NOW + 1, NOW + 1, seen_at=NOW) == RequestContext()
    served = Served(new_request_id("u1"), "u1", "two_level_ts", {"p1": "f1", "clicked": "f1"})
    storage.serving.serve(served, 60, {"request_id": served.request_id})
    assert storage.serving.lookup([served.request_id])[served.request_id] == served
    assert 0 < rclient.ttl(storage.keys.served(served.request_id)) <= 60
    assert storage.decisions.kept() == 1


BATCHES = st.lists(
    st.tuples(
        st.sampled_from("ic"),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=12),
    ),
    max_size=6,
)


@dataclass
class Model:
    """The counting rules in plain Python: each (request, post, kind) counts once, a click
    counts its missing impression, and a forum's windowed totals take each post's first
    ``window`` impressions and the clicks of those impressions."""

    window: int
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    posts: Counter[tuple[str, str]] = field(default_factory=Counter)
    forums: Counter[tuple[str, str]] = field(default_factory=Counter)

    def apply(self, kind: str, request_id: str, post_id: str, forum_id: str) -> int:
        if (request_id, post_id, kind) in self.seen:
            return 0
        self.seen.add((request_id, post_id, kind))
        implied = kind == "c" and (request_id, post_id, "i") not in self.seen
        if kind == "i" or implied:
            self.seen.add((request_id, post_id, "i"))
            self.posts[post_id, "i"] += 1
            self.forums[forum_id, "_i"] += 1
            if self.posts[post_id, "i"] <= self.window:
                self.seen.add((request_id, post_id, "in window"))
                self.forums[forum_id, "_wi"] += 1
        if kind == "c":
            self.posts[post_id, "c"] += 1
            self.forums[forum_id, "_c"] += 1
            if (request_id, post_id, "in window") in self.seen:
                self.forums[forum_id, "_wc"] += 1
        return 2 if implied else 1


def forum_fields(rclient: redis.Redis, storage: Storage, forum_id: str) -> dict[str, int]:
    """The forum's totals, over every impression and windowed (0 where absent)."""
    values = rclient.hmget(storage.keys.stats(forum_id), *FORUM_FIELDS)
    return {name: int(value or 0) for name, value in zip(FORUM_FIELDS, values, strict=True)}


FORUM_FIELDS = ("_i", "_c", "_wi", "_wc")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=BATCHES, window=st.integers(0, 3))
def test_batches_count_like_one_event_at_a_time(
    storage: Storage,
    rclient: redis.Redis,
    batches: list[tuple[str, list[tuple[int, int]]]],
    window: int,
) -> None:
    """Events of many requests and forums in one batch, duplicates and clicks before their
    impressions included, count exactly as the rules say, in the batch's order, with or
    without a forum window."""
    rclient.flushdb()
    storage = Storage(rclient, "pb", forum_window=window)
    model = Model(window)
    for kind, pairs in batches:
        events = [(f"r{r}", f"p{p}", f"f{p % 3}") for r, p in pairs]
        expected = [model.apply(kind, *event) for event in events]
        assert storage.counting.apply_events(kind, events, 60) == expected
    for p in range(6):
        imps, clicks = rclient.hmget(storage.keys.stats(f"f{p % 3}"), f"i:p{p}", f"c:p{p}")
        assert (int(imps or 0), int(clicks or 0)) == (model.posts[f"p{p}", "i"],
                                                      model.posts[f"p{p}", "c"])  # fmt: skip
    for f in range(3):
        stored = forum_fields(rclient, storage, f"f{f}")
        assert stored == {name: model.forums[f"f{f}", name] for name in FORUM_FIELDS}
        assert stored["_wc"] <= stored["_wi"] <= min(stored["_i"], 2 * window)


# The forum window, one post: W, the events in their order of arrival ("i2" is the impression
# of the post in request r2, "c2" its click), and the forum's _i, _c, _wi, _wc.
WINDOW_RULE = [
    (3, "i1 i2 c2 i3 i4 i5 c5", (5, 2, 3, 1)),
    (0, "i1 i2 c2 i3 i4 i5 c5", (5, 2, 0, 0)),  # no window: the totals only
    (3, "i1 i2 i3 c3 i4 c4", (4, 2, 3, 1)),  # the W-th impression is in, the next one out
    (3, "i1 i2 i3 i4 c4 c1", (4, 2, 3, 1)),  # a click follows its impression, not its arrival
    (2, "c1 i1 c2 c3 i3", (3, 3, 2, 2)),  # a click counts its missing impression, in order
    (2, "i1 i1 c1 c1 i2 c2 i2 i3 c3 c3", (3, 3, 2, 2)),  # duplicates count once
    (20, "i1 c1 i2 i3 c3 c4", (4, 3, 4, 3)),  # a window no post fills: the totals
]


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
@pytest.mark.parametrize(("window", "events", "expected"), WINDOW_RULE)
def test_forum_window_counts_each_posts_first_impressions_and_their_clicks(
    storage: Storage,
    rclient: redis.Redis,
    window: int,
    events: str,
    expected: tuple[int, int, int, int],
    batched: bool,
) -> None:
    storage = Storage(rclient, "pb", forum_window=window)
    put(storage, "p", "f")
    arrivals = [(e[0], (f"r{e[1:]}", "p", "f")) for e in events.split()]
    runs = [(kind, [e for _, e in run]) for kind, run in groupby(arrivals, key=itemgetter(0))]
    if not batched:
        runs = [(kind, [event]) for kind, event in arrivals]
    for kind, run in runs:
        storage.counting.apply_events(kind, run, 60)
    for kind, run in runs:  # a client retrying everything: nothing counts again
        assert storage.counting.apply_events(kind, run, 60) == [0] * len(run)
    assert forum_fields(rclient, storage, "f") == dict(zip(FORUM_FIELDS, expected, strict=True))
    if not window:
        assert not rclient.hexists(storage.keys.stats("f"), "_wi")  # the old hash exactly


@pytest.mark.parametrize("window", [0, 2])
def test_forum_reads_give_the_policy_the_windowed_counts(storage: Storage, window: int) -> None:
    storage = Storage(storage.client, "pb", forum_window=window)
    put(storage, "p", "f")
    storage.counting.apply_events("c", [(f"r{r}", "p", "f") for r in range(3)], 60)
    policy = (2, 2) if window else (3, 3)
    (forum,) = storage.catalogue.get_forums(["f"], NOW)
    assert (forum.impressions, forum.clicks, forum.policy_counts) == (3, 3, policy)
    (read,) = storage.snapshots.read_forums(["f"], NOW)
    assert read.policy_counts == policy
    (changes,) = storage.snapshots.read_changes({"f": 0.0}, NOW)
    assert changes.policy_counts == policy


def test_a_forum_counted_before_the_window_existed_reads_as_no_counts(
    storage: Storage, rclient: redis.Redis
) -> None:
    storage = Storage(rclient, "pb", forum_window=20)
    put(storage, "p", "f")
    rclient.hset(storage.keys.stats("f"), mapping={"_i": 100, "_c": 7, "i:p": 100, "c:p": 7})
    (forum,) = storage.catalogue.get_forums(["f"], NOW)
    assert (forum.impressions, forum.clicks, forum.policy_counts) == (100, 7, (0, 0))
    storage.counting.apply_events("i", [("r1", "p", "f")], 60)  # p is past its window already
    assert storage.snapshots.read_forums(["f"], NOW)[0].policy_counts == (0, 0)


def test_temporary_keys_expire(storage: Storage, rclient: redis.Redis) -> None:
    put(storage, "p1", "f1")
    rid = serve(storage, {"p1": "f1"})
    storage.counting.apply_events("i", [(rid, "p1", "f1")], 60)
    storage.serving.remember_clicks([("u1", "p1")], time.time(), 120)
    for key in (
        storage.keys.served(rid),
        storage.keys.seen("f1", rid),
        storage.keys.clicked("u1"),
        storage.keys.post("f1", "p1"),
        storage.keys.post_forum("p1"),
    ):
        assert rclient.ttl(key) > 0, key


def test_lookup_served_returns_user_policy_and_forums(storage: Storage) -> None:
    rid = serve(storage, {"p1": "f1", "p2": "f2"}, user="alice")
    found = storage.serving.lookup([rid, rid, "unknown"])
    assert list(found) == [rid]
    assert found[rid].user_id == "alice"
    assert found[rid].forums == {"p1": "f1", "p2": "f2"}


def test_request_ids_carry_their_time() -> None:
    rid = new_request_id("u1", NOW)
    assert len(rid) == 28
    assert request_time(rid) == NOW
    assert request_time("not-a-generated-id") is None


def test_prune_forgets_long_expired_posts_but_keeps_forum_totals(
    storage: Storage, rclient: redis.Redis
) -> None:
    storage = Storage(rclient, "pb", forum_window=20)
    put(storage, "old", "f1", expires=NOW - 100)
    put(storage, "recent", "f1", expires=NOW + 100)
    put(storage, "live", "f1", expires=NOW + 10_000)
    rid = serve(storage, {"old": "f1", "recent": "f1", "live": "f1"})
    storage.counting.apply_events("c", [(rid, p, "f1") for p in ("old", "recent", "live")], 60)
    assert storage.counting.prune_expired(NOW) == 1
    assert storage.counting.prune_expired(NOW) == 0
    assert rclient.zrange(storage.keys.live("f1"), 0, -1) == [b"recent", b"live"]
    stats = rclient.hgetall(storage.keys.stats("f1"))
    assert b"i:old" not in stats and b"c:old" not in stats
    assert stats[b"c:recent"] == b"1" and stats[b"i:live"] == b"1"
    assert (stats[b"_i"], stats[b"_c"]) == (b"3", b"3")
    assert (stats[b"_wi"], stats[b"_wc"]) == (b"3", b"3")


def test_prune_is_bounded_per_forum(storage: Storage) -> None:
    for i in range(5):
        put(storage, f"p{i}", "f1", expires=NOW - 100)
        put(storage, f"q{i}", "f2", expires=NOW - 100)
    assert storage.counting.prune_expired(NOW, limit=3) == 6
    assert storage.counting.prune_expired(NOW, limit=3) == 4
