"""The seen-limit against a real Redis: the impressions the worker records per member and the
posts it finds at the limit (core.storage.shown, lua/record_shown.lua), and the read before a
slate is chosen that finds them (Serving.to_hide).

Time is the tests' own: request ids and event times are built from ``NOW``, so the window
is crossed by choosing scores, never by waiting.
"""

from __future__ import annotations

import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.events import apply_batch
from core.storage import RequestContext, Served, Storage, new_request_id
from core.storage.shown import SHOWN_KEEP

NOW = float(int(time.time()))
DAY = 86_400
LIMIT = 3


def shown_to(storage: Storage, user: str, post: str, at: float, limit: int = LIMIT) -> str:
    """Serve ``post`` to ``user`` at ``at`` and apply its impression as the worker does (a
    second later); the slate's request id."""
    request_id = new_request_id(user, at)
    storage.serving.serve(Served(request_id, user, "random", {post: "f1"}), DAY)
    apply_batch(storage, "impression", [[request_id, post]], at + 1, DAY, DAY,
                seen_limit=(DAY, limit))  # fmt: skip
    return request_id


def check(
    storage: Storage, user: str, posts: list[str], now: float = NOW,
    clicked_since: float | None = None,
) -> RequestContext | None:  # fmt: skip
    """What the web tier reads before choosing ``user``'s slate at ``now`` with the seen-limit
    on, when it hides one of ``posts`` (else None)."""
    since = now - DAY if clicked_since is None else clicked_since
    found = storage.serving.to_hide(user, since, now, seen_at=now)
    return found if {*found.clicked, *found.shown} & set(posts) else None


def test_a_post_shown_the_limit_times_without_a_click_is_refused_to_that_member_only(
    storage: Storage,
) -> None:
    shown_to(storage, "u1", "p", NOW - 300)
    shown_to(storage, "u1", "p", NOW - 200)
    assert check(storage, "u1", ["p", "q"]) is None  # below the limit
    shown_to(storage, "u1", "p", NOW - 100)
    assert check(storage, "u1", ["p", "q"]) == RequestContext([], [], ["p"])
    assert check(storage, "u1", ["q"]) is None  # the slate does not hold it
    assert check(storage, "u2", ["p"]) is None  # another member
    for i in range(LIMIT):
        shown_to(storage, "u3", "p", NOW - 300 + i, limit=LIMIT + 1)
    assert check(storage, "u3", ["p"]) is None


def test_the_refusal_returns_every_post_to_hide_with_the_clicked_ones(storage: Storage) -> None:
    for post in ("p", "q"):
        for i in range(LIMIT):
            shown_to(storage, "u1", post, NOW - 300 + i)
    storage.serving.remember_clicks([("u1", "c")], NOW - 10, DAY)
    assert check(storage, "u1", ["c", "x"]) == RequestContext(["c"], [], ["p", "q"])
    assert check(storage, "u1", ["q", "x"]) == RequestContext(["c"], [], ["p", "q"])
    assert check(storage, "u1", ["x"]) is None


def test_impressions_older_than_the_window_do_not_count(
    storage: Storage, rclient: redis.Redis
) -> None:
    shown_to(storage, "u1", "p", NOW - DAY - 10)
    shown_to(storage, "u1", "p", NOW - 200)
    shown_to(storage, "u1", "p", NOW - 100)
    # Three within a day of the first: at the limit until a day after it, not after.
    assert rclient.zscore(storage.keys.limited("u1"), "p") == NOW - 10
    assert check(storage, "u1", ["p"], now=NOW - 10) is not None
    assert check(storage, "u1", ["p"], now=NOW - 9) is None
    key = storage.keys.shown("u1")
    assert rclient.zcard(key) == 3
    assert 0 < rclient.ttl(key) <= DAY and 0 < rclient.ttl(storage.keys.limited("u1")) <= DAY
    shown_to(storage, "u1", "q", NOW)  # a later write drops what left the window
    assert sorted(p.decode().split("#")[0] for p in rclient.zrange(key, 0, -1)) == [
        "p", "p", "q"
    ]  # fmt: skip
    assert rclient.zrange(storage.keys.limited("u1"), 0, -1) == []  # p's time has passed


def test_duplicates_replays_and_retries_count_once(storage: Storage) -> None:
    limit = (DAY, 2)
    first = new_request_id("u1", NOW - 300)
    storage.serving.serve(Served(first, "u1", "random", {"p": "f1"}), DAY)
    for applied_at in (NOW - 299, NOW - 299, NOW - 250):  # a duplicate batch, then a replay
        apply_batch(storage, "impression", [[first, "p"], [first, "p"]], applied_at, DAY, DAY,
                    seen_limit=limit)  # fmt: skip
    assert check(storage, "u1", ["p"]) is None
    # A worker that died after the counting step and before the member's: its retry finds the
    # impression counted (a duplicate) and still records it, once.
    second = new_request_id("u1", NOW - 200)
    storage.serving.serve(Served(second, "u1", "random", {"p": "f1"}), DAY)
    assert storage.counting.apply_events("i", [(second, "p", "f1")], DAY) == [1]
    assert check(storage, "u1", ["p"]) is None
    retry = apply_batch(storage, "impression", [[second, "p"]], NOW - 150, DAY, DAY,
                        seen_limit=limit)  # fmt: skip
    assert retry.results == {"duplicate": 1}
    assert check(storage, "u1", ["p"]) == RequestContext([], [], ["p"])


def test_a_click_lifts_the_limit_for_the_impressions_before_it(
    storage: Storage, rclient: redis.Redis
) -> None:
    before = new_request_id("u1", NOW - 60)  # served before the click, applied after it
    storage.serving.serve(Served(before, "u1", "random", {"p": "f1"}), DAY)
    last = ""
    for i in range(LIMIT):
        last = shown_to(storage, "u1", "p", NOW - 300 + i)
    after_click = NOW - 40  # the clicked check alone hides a click older than this
    assert check(storage, "u1", ["p"], clicked_since=after_click) is not None
    apply_batch(storage, "click", [[last, "p"]], NOW - 49, DAY, DAY, accepted_at=NOW - 50,
                seen_limit=(DAY, LIMIT))  # fmt: skip
    assert check(storage, "u1", ["p"], clicked_since=after_click) is None
    # A click of an earlier slate applied late does not move the post's click back.
    storage.shown.remember_clicks([("u1", "p")], NOW - 400, NOW - 48, (DAY, LIMIT))
    assert rclient.zscore(storage.keys.shown("u1"), "p") == NOW - 50
    apply_batch(storage, "impression", [[before, "p"]], NOW - 45, DAY, DAY,
                seen_limit=(DAY, LIMIT))  # fmt: skip
    shown_to(storage, "u1", "p", NOW - 30)
    shown_to(storage, "u1", "p", NOW - 20)
    assert check(storage, "u1", ["p"], clicked_since=after_click) is None
    shown_to(storage, "u1", "p", NOW - 10)  # the third since the click
    assert check(storage, "u1", ["p"], clicked_since=after_click) is not None


def test_each_member_keeps_its_newest_entries_only(storage: Storage, rclient: redis.Redis) -> None:
    limit = (DAY, LIMIT)
    oldest = [("u1", "p", new_request_id("u1", NOW - 1000 + i)) for i in range(LIMIT)]
    storage.shown.remember_impressions(oldest, NOW, limit)
    assert check(storage, "u1", ["p"]) is not None
    newer = [("u1", f"n{i}", new_request_id("u1", NOW - 500 + i)) for i in range(SHOWN_KEEP)]
    storage.shown.remember_impressions(newer[: SHOWN_KEEP - LIMIT], NOW, limit)
    assert rclient.zcard(storage.keys.shown("u1")) == SHOWN_KEEP
    assert check(storage, "u1", ["p"]) is not None
    storage.shown.remember_impressions(newer[SHOWN_KEEP - LIMIT :][:1], NOW, limit)
    assert rclient.zcard(storage.keys.shown("u1")) == SHOWN_KEEP  # p's oldest was dropped
    assert check(storage, "u1", ["p"]) is None
    storage.shown.remember_impressions(oldest, NOW, limit)  # replayed: still the oldest, dropped
    assert rclient.zcard(storage.keys.shown("u1")) == SHOWN_KEEP
    assert check(storage, "u1", ["p"]) is None
    assert rclient.zcard(storage.keys.limited("u1")) == 0


def test_a_full_members_entries_stay_in_the_compact_encoding(
    storage: Storage, rclient: redis.Redis
) -> None:
    post = "p" * 51  # the longest post id whose entries stay within 64 bytes
    full = [("u1", f"{post[:-3]}{i:03d}", new_request_id("u1", NOW - 500 + i))
            for i in range(SHOWN_KEEP)]  # fmt: skip
    storage.shown.remember_impressions(full, NOW, (DAY, 1))
    assert rclient.object("encoding", storage.keys.shown("u1")) in (b"ziplist", b"listpack")
    assert rclient.zcard(storage.keys.limited("u1")) == SHOWN_KEEP  # every post, at a limit of 1


def test_without_the_seen_limit_nothing_is_recorded_or_checked(
    storage: Storage, rclient: redis.Redis
) -> None:
    for i in range(LIMIT):
        request_id = new_request_id("u1", NOW - 100 + i)
        storage.serving.serve(Served(request_id, "u1", "random", {"p": "f1"}), DAY)
        apply_batch(storage, "impression", [[request_id, "p"]], NOW, DAY, DAY)
    assert not rclient.exists(storage.keys.shown("u1"))
    for i in range(LIMIT):
        shown_to(storage, "u1", "p", NOW - 50 + i)
    assert check(storage, "u1", ["p"]) is not None
    assert storage.serving.to_hide("u1", NOW - DAY, NOW) == RequestContext()  # no seen check


def test_only_request_ids_the_server_issued_are_recorded(storage: Storage) -> None:
    with pytest.raises(ValueError, match="not a request id issued by the server"):
        storage.shown.remember_impressions([("u1", "p", "r1")], NOW, (DAY, LIMIT))


WINDOW = 60
# Slates of post a or b served at second t of the test's clock; what the worker applies, in
# order, duplicates and replays included: the impression of slate k, or a click of a post
# accepted at second t.
SLATES = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 100)), min_size=1, max_size=8)
OPS = st.lists(
    st.one_of(st.tuples(st.just("i"), st.integers(0, 7)),
              st.tuples(st.just("c"), st.sampled_from("ab"), st.integers(0, 100))),
    max_size=16,
)  # fmt: skip


def at_limit_model(
    slates: list[tuple[str, int]], impressions: set[int], clicks: dict[str, int], limit: int,
    at: float,
) -> set[str]:  # fmt: skip
    """The rule in plain Python: a post's distinct impressions served within the window before
    ``at`` and not before its last click; at the limit when there are ``limit`` of them."""
    counts = {
        post: sum(1 for k in impressions if slates[k][0] == post
                  and slates[k][1] >= max(at - WINDOW, clicks.get(post, -1)))
        for post in "ab"
    }  # fmt: skip
    return {post for post, n in counts.items() if n >= limit}


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(slates=SLATES, ops=OPS, limit=st.integers(1, 3), later=st.sampled_from([0, 15, 45]))
def test_the_posts_at_the_limit_follow_the_rule_whatever_the_order_and_the_repeats(
    storage: Storage, rclient: redis.Redis, slates: list[tuple[str, int]],
    ops: list[tuple[str, object] | tuple[str, object, object]], limit: int, later: int,
) -> None:  # fmt: skip
    rclient.delete(storage.keys.shown("m"), storage.keys.limited("m"))
    base = NOW - 1000
    request_ids = [new_request_id("m", base + t) for _, t in slates]
    impressions: set[int] = set()
    clicks: dict[str, int] = {}
    now = base + 100.0
    for op in ops:
        now += 1  # the worker applies each batch later than every slate was served
        if op[0] == "i":
            k = int(str(op[1])) % len(slates)
            impressions.add(k)
            storage.shown.remember_impressions([("m", slates[k][0], request_ids[k])], now,
                                               (WINDOW, limit))  # fmt: skip
        else:
            post, t = str(op[1]), int(str(op[2]))
            clicks[post] = max(clicks.get(post, -1), t)
            storage.shown.remember_clicks([("m", post)], base + t, now, (WINDOW, limit))
    at = now + later
    stored = rclient.zrangebyscore(storage.keys.limited("m"), at, "+inf")
    expected = at_limit_model(slates, impressions, clicks, limit, at - base)
    assert {post.decode() for post in stored} == expected


@pytest.mark.parametrize("seen_limit", [(DAY, LIMIT), None])
def test_clicks_are_noted_for_the_reclick_window_with_the_seen_limit_on_or_off(
    storage: Storage, rclient: redis.Redis, seen_limit: tuple[int, int] | None
) -> None:
    """With the seen-limit on, its step notes the clicked posts (one script call a member);
    off, three commands a member do: the same set, scores, trimming and expiry either way."""
    clicked = storage.keys.clicked("u1")
    rclient.zadd(clicked, {"old": NOW - 700, "kept": NOW - 500})
    slate = new_request_id("u1", NOW - 60)
    storage.serving.serve(Served(slate, "u1", "random", {"p": "f1", "q": "f1"}), DAY)
    events = [[slate, "p"], [slate, "q"], [slate, "p"]]
    for applied_at in (NOW, NOW + 5):  # a replay moves the clicks' time to its own, as before
        apply_batch(storage, "click", events, applied_at, DAY, 600, accepted_at=NOW - 30,
                    seen_limit=seen_limit)  # fmt: skip
        got = dict(rclient.zrange(clicked, 0, -1, withscores=True))
        assert got == {b"kept": NOW - 500, b"p": applied_at, b"q": applied_at}
        assert 595 <= rclient.ttl(clicked) <= 600
    assert rclient.exists(storage.keys.shown("u1")) == (seen_limit is not None)


def test_a_reclick_window_of_zero_notes_nothing_and_drops_the_clicked_posts(
    storage: Storage, rclient: redis.Redis
) -> None:
    rclient.zadd(storage.keys.clicked("u1"), {"old": NOW - 10})
    slate = new_request_id("u1", NOW - 60)
    storage.serving.serve(Served(slate, "u1", "random", {"p": "f1"}), DAY)
    apply_batch(storage, "click", [[slate, "p"]], NOW, DAY, 0, seen_limit=(DAY, LIMIT))
    assert not rclient.exists(storage.keys.clicked("u1"))
