"""Storage against a real Redis: key layout, atomic idempotent counting, TTLs."""

from __future__ import annotations

import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.storage import PostConflict, Served, Storage, new_request_id, request_time

NOW = 1_700_000_000.0


def put(storage: Storage, post_id: str, forum_id: str, expires: float = NOW + 3600) -> bool:
    return storage.put_post(post_id, forum_id, NOW, expires, retention=60)


def test_put_post_registers_candidate_and_forum(storage: Storage) -> None:
    assert put(storage, "p1", "f1") is True
    assert put(storage, "p1", "f1") is False
    record = storage.get_post("p1")
    assert record is not None
    assert (record.forum_id, record.impressions, record.clicks) == ("f1", 0, 0)
    assert storage.forum_ids() == ["f1"]


def test_post_cannot_change_forum(storage: Storage) -> None:
    put(storage, "p1", "f1")
    with pytest.raises(PostConflict, match="belongs to forum f1"):
        put(storage, "p1", "f2")


def test_withdrawn_post_cannot_come_back(storage: Storage) -> None:
    put(storage, "p1", "f1")
    assert storage.delete_post("p1", NOW) is True
    assert storage.delete_post("nope", NOW) is False
    with pytest.raises(PostConflict, match="withdrawn"):
        put(storage, "p1", "f1")


def test_catalog_has_only_live_posts(storage: Storage) -> None:
    put(storage, "old", "f1", expires=NOW - 1)
    put(storage, "new", "f1", expires=NOW + 10)
    put(storage, "gone", "f2")
    storage.delete_post("gone", NOW)
    catalog = {f.forum_id: f.posts for f in storage.read_forums(storage.forum_ids(), NOW)}
    assert catalog["f1"] is not None and catalog["f1"].post_ids == ["new"]
    assert catalog["f2"] is not None and catalog["f2"].post_ids == []


def test_keys_share_a_hash_tag_per_forum(storage: Storage) -> None:
    keys = storage.keys
    tags = {
        k[k.index("{") : k.index("}") + 1]
        for k in (keys.live("f1"), keys.stats("f1"), keys.seen("f1", "r"), keys.changes("f1"))
    }
    assert tags == {"{f:f1}"}
    assert keys.served("r").startswith("pb:{r:r}")


def serve(storage: Storage, posts: dict[str, str], user: str = "u1") -> str:
    request_id = new_request_id()
    storage.remember_served(Served(request_id, user, "two_level_ts", posts), ttl=60)
    return request_id


def test_events_count_once_and_click_implies_impression(storage: Storage) -> None:
    put(storage, "p1", "f1")
    put(storage, "p2", "f1")
    rid = serve(storage, {"p1": "f1", "p2": "f1"})
    assert storage.apply_events("i", [(rid, "p1", "f1"), (rid, "p1", "f1")], 60) == [1, 0]
    assert storage.apply_events("c", [(rid, "p2", "f1")], 60) == [2]
    assert storage.apply_events("i", [(rid, "p2", "f1")], 60) == [0]
    assert storage.apply_events("c", [(rid, "p2", "f1")], 60) == [0]
    (forum,) = storage.read_forums(["f1"], NOW)
    assert forum.posts is not None
    posts = forum.posts
    assert dict(
        zip(posts.post_ids, zip(posts.impressions, posts.clicks, strict=True), strict=True)
    ) == {"p1": (1, 0), "p2": (1, 1)}
    assert forum.totals == (2, 1)


def test_a_slate_with_a_post_to_hide_is_not_remembered(
    storage: Storage, rclient: redis.Redis
) -> None:
    storage.decision_log_maxlen = 10
    put(storage, "p1", "f1")
    storage.remember_clicks([("u1", "clicked")], NOW, 3600)
    storage.delete_post("p1", NOW)
    since = (NOW - 60, NOW - 5)
    for posts, hidden in (
        ({"x": "f1", "clicked": "f1"}, (["clicked"], ["p1"])),
        ({"p1": "f1", "x": "f1"}, (["clicked"], ["p1"])),
    ):
        served = Served(new_request_id(), "u1", "two_level_ts", posts)
        found = storage.serve(served, 60, {"request_id": served.request_id}, since)
        assert found is not None and (found.clicked, found.withdrawn) == hidden
        assert not rclient.exists(storage.keys.served(served.request_id))
    assert rclient.xlen(storage.keys.decisions) == 0
    later = (NOW + 1, NOW + 1)  # the click and the withdrawal are older: nothing to hide
    served = Served(new_request_id(), "u1", "two_level_ts", {"p1": "f1", "clicked": "f1"})
    assert storage.serve(served, 60, {"request_id": served.request_id}, later) is None
    assert storage.lookup_served([served.request_id])[served.request_id] == served
    assert rclient.xlen(storage.keys.decisions) == 1


BATCHES = st.lists(
    st.tuples(
        st.sampled_from("ic"),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=12),
    ),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=BATCHES)
def test_batches_count_like_one_event_at_a_time(
    storage: Storage, rclient: redis.Redis, batches: list[tuple[str, list[tuple[int, int]]]]
) -> None:
    """Events of many requests and forums in one batch, duplicates and clicks before their
    impressions included, count exactly as the rules say, in the batch's order."""
    rclient.flushdb()
    seen: set[tuple[str, str, str]] = set()
    counts = {(f"p{p}", k): 0 for p in range(6) for k in "ic"}
    for kind, pairs in batches:
        events = [(f"r{r}", f"p{p}", f"f{p % 3}") for r, p in pairs]
        expected = []
        for request_id, post_id, _ in events:
            wanted = [kind, "i"] if kind == "c" else ["i"]
            fresh = [k for k in dict.fromkeys(wanted) if (request_id, post_id, k) not in seen]
            expected.append(0 if kind not in fresh else len(fresh))
            for k in fresh if kind in fresh else []:
                seen.add((request_id, post_id, k))
                counts[post_id, k] += 1
        assert storage.apply_events(kind, events, 60) == expected
    for p in range(6):
        imps, clicks = rclient.hmget(storage.keys.stats(f"f{p % 3}"), f"i:p{p}", f"c:p{p}")
        assert (int(imps or 0), int(clicks or 0)) == (counts[f"p{p}", "i"], counts[f"p{p}", "c"])
    for f in range(3):
        imps, clicks = rclient.hmget(storage.keys.stats(f"f{f}"), "_i", "_c")
        posts = [f"p{p}" for p in range(6) if p % 3 == f]
        assert int(imps or 0) == sum(counts[p, "i"] for p in posts)
        assert int(clicks or 0) == sum(counts[p, "c"] for p in posts)


def test_temporary_keys_expire(storage: Storage, rclient: redis.Redis) -> None:
    put(storage, "p1", "f1")
    rid = serve(storage, {"p1": "f1"})
    storage.apply_events("i", [(rid, "p1", "f1")], 60)
    storage.remember_clicks([("u1", "p1")], time.time(), 120)
    for key in (
        storage.keys.served(rid),
        storage.keys.seen("f1", rid),
        storage.keys.clicked("u1"),
        storage.keys.post("p1"),
    ):
        assert rclient.ttl(key) > 0, key


def test_lookup_served_returns_user_policy_and_forums(storage: Storage) -> None:
    rid = serve(storage, {"p1": "f1", "p2": "f2"}, user="alice")
    found = storage.lookup_served([rid, rid, "unknown"])
    assert list(found) == [rid]
    assert found[rid].user_id == "alice"
    assert found[rid].forums == {"p1": "f1", "p2": "f2"}


def test_request_ids_carry_their_time() -> None:
    rid = new_request_id(NOW)
    assert len(rid) == 28
    assert request_time(rid) == NOW
    assert request_time("not-a-generated-id") is None


def test_prune_forgets_long_expired_posts_but_keeps_forum_totals(
    storage: Storage, rclient: redis.Redis
) -> None:
    put(storage, "old", "f1", expires=NOW - 100)
    put(storage, "recent", "f1", expires=NOW + 100)
    put(storage, "live", "f1", expires=NOW + 10_000)
    rid = serve(storage, {"old": "f1", "recent": "f1", "live": "f1"})
    storage.apply_events("c", [(rid, p, "f1") for p in ("old", "recent", "live")], 60)
    assert storage.prune_expired(NOW) == 1
    assert storage.prune_expired(NOW) == 0
    assert rclient.zrange(storage.keys.live("f1"), 0, -1) == [b"recent", b"live"]
    stats = rclient.hgetall(storage.keys.stats("f1"))
    assert b"i:old" not in stats and b"c:old" not in stats
    assert stats[b"c:recent"] == b"1" and stats[b"i:live"] == b"1"
    assert (stats[b"_i"], stats[b"_c"]) == (b"3", b"3")


def test_prune_is_bounded_per_forum(storage: Storage) -> None:
    for i in range(5):
        put(storage, f"p{i}", "f1", expires=NOW - 100)
        put(storage, f"q{i}", "f2", expires=NOW - 100)
    assert storage.prune_expired(NOW, limit=3) == 6
    assert storage.prune_expired(NOW, limit=3) == 4
