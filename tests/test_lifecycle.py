"""A post's lifecycle in storage and through the API: transitions that cannot be undone, ids
that cannot come back or move forum until everything about them is gone, withdrawn posts
pruned, idle forums forgotten. Time passes through an injected clock (tests/redis_clock.py)."""

from __future__ import annotations

import time

import pytest
import redis
from flask.testing import FlaskClient

from core.storage import PostConflict, Served, Storage, new_request_id
from core.storage.catalogue import TOMBSTONE_GRACE_SECONDS
from tests.conftest import ADMIN, register
from tests.redis_clock import advance

WINDOW = 86_400  # the attribution window, and how long metadata outlives a post's expiry
HOUR = 3600


def counted(storage: Storage, post_id: str, forum_id: str, now: float, clicks: int = 1) -> None:
    """Serve the post and count an impression and ``clicks`` clicks on it (separate slates)."""
    for _ in range(clicks):
        rid = new_request_id("member", now)
        storage.serving.serve(Served(rid, "member", "two_level_ts", {post_id: forum_id}), WINDOW)
        storage.counting.apply_events("c", [(rid, post_id, forum_id)], WINDOW)


def test_a_withdrawn_post_stays_withdrawn_until_every_trace_of_it_is_gone(
    storage: Storage, rclient: redis.Redis
) -> None:
    now = time.time()
    catalogue = storage.catalogue
    catalogue.register("p", "f", now, WINDOW, lifetime=HOUR)
    counted(storage, "p", "f", now, clicks=2)
    assert catalogue.delete_post("p", now, WINDOW)
    advance(rclient, HOUR + WINDOW + 1)  # past where its metadata used to expire
    later = now + HOUR + WINDOW + 1
    for forum_id in ("f", "g"):
        with pytest.raises(PostConflict):
            catalogue.register("p", forum_id, later, WINDOW)
    record = catalogue.get_post("p")
    assert record is not None and record.deleted and record.forum_id == "f"
    storage.counting.prune_expired(later - WINDOW)
    advance(rclient, TOMBSTONE_GRACE_SECONDS)
    forgotten = later + TOMBSTONE_GRACE_SECONDS
    assert catalogue.get_post("p") is None
    # The id starts afresh, in any forum, with no inherited counts.
    assert catalogue.register("p", "g", forgotten, WINDOW).created
    record = catalogue.get_post("p")
    assert record is not None
    assert (record.forum_id, record.impressions, record.clicks) == ("g", 0, 0)
    assert not record.deleted


def test_an_expired_post_cannot_move_to_another_forum_nor_inherit_its_counts(
    storage: Storage, rclient: redis.Redis
) -> None:
    now = time.time()
    catalogue = storage.catalogue
    catalogue.register("p", "f", now, WINDOW, lifetime=HOUR)
    counted(storage, "p", "f", now, clicks=3)
    advance(rclient, HOUR + WINDOW + 1)  # its metadata has expired
    later = now + HOUR + WINDOW + 1
    assert catalogue.get_post("p") is None
    with pytest.raises(PostConflict, match="belongs to forum f"):
        catalogue.register("p", "g", later, WINDOW)
    assert catalogue.register("p", "f", later, WINDOW, lifetime=HOUR).created
    record = catalogue.get_post("p")
    assert record is not None and (record.impressions, record.clicks) == (0, 0)
    forum = catalogue.get_forum("f", later)
    assert forum is not None and (forum.impressions, forum.clicks, forum.live_posts) == (3, 3, 1)


def test_two_registrations_of_a_new_id_in_two_forums_cannot_both_win(storage: Storage) -> None:
    now = time.time()
    assert storage.catalogue.register("p", "f", now, WINDOW).created
    with pytest.raises(PostConflict, match="belongs to forum f"):
        storage.catalogue.register("p", "g", now, WINDOW)
    assert storage.catalogue.forum_ids() == ["f"]


def test_pruning_removes_a_withdrawn_posts_counts_once_its_window_closed(
    storage: Storage, rclient: redis.Redis
) -> None:
    now = time.time()
    storage.catalogue.register("p", "f", now, WINDOW)
    storage.catalogue.register("q", "f", now, WINDOW)
    counted(storage, "p", "f", now, clicks=2)
    storage.catalogue.delete_post("p", now, WINDOW)
    assert storage.counting.prune_expired(now - 1) == 0  # its events may still count
    assert storage.counting.prune_expired(now + 1) == 1
    stats = rclient.hgetall(storage.keys.stats("f"))
    assert b"i:p" not in stats and b"c:p" not in stats
    assert (stats[b"_i"], stats[b"_c"]) == (b"2", b"2")  # the forum's totals keep them
    assert rclient.zcard(storage.keys.gone("f")) == 0


def test_a_forum_with_no_post_left_is_forgotten_and_a_new_post_brings_it_back(
    storage: Storage, rclient: redis.Redis
) -> None:
    now = time.time()
    storage.catalogue.register("p", "f", now, WINDOW, lifetime=HOUR)
    storage.catalogue.register("q", "g", now, WINDOW, lifetime=10 * HOUR)
    counted(storage, "p", "f", now)
    assert storage.counting.prune_expired(now + HOUR + 1) == 1
    assert storage.catalogue.forum_ids() == ["g"]
    assert [r.forum_id for r in storage.snapshots.read_changes({}, now)] == ["g"]
    history = storage.catalogue.get_forum("f", now + HOUR + 1)
    assert history is not None and (history.impressions, history.live_posts) == (1, 0)
    assert not rclient.exists(storage.keys.changes("f"), storage.keys.live("f"))
    storage.catalogue.register("r", "f", now + HOUR + 2, WINDOW)
    assert storage.catalogue.forum_ids() == ["f", "g"]


def test_forums_are_listed_in_pages(client: FlaskClient) -> None:
    forums = [f"forum-{i:02d}" for i in range(7)]
    for forum_id in reversed(forums):
        register(client, f"post-{forum_id}", forum_id)
    listed, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        body = client.get("/v1/forums", query_string=query).json
        assert body is not None and len(body["forums"]) <= 3
        listed += [f["forum_id"] for f in body["forums"]]
        cursor, pages = body["next_cursor"], pages + 1
        if cursor is None:
            break
    assert listed == forums and pages == 3
    whole = client.get("/v1/forums").json
    assert whole is not None and whole["next_cursor"] is None and len(whole["forums"]) == 7


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "abc"}, {"cursor": "ZZ"}]
)
def test_forum_paging_refuses_bad_limits_and_cursors(client: FlaskClient, query: dict) -> None:
    response = client.get("/v1/forums", query_string=query)
    assert response.status_code == 400
    assert response.json is not None and response.json["error"]["field"] == next(iter(query))


def test_a_withdrawn_post_answers_409_to_put_in_any_forum(client: FlaskClient) -> None:
    register(client, "p", "f")
    assert client.delete("/v1/posts/p", headers=ADMIN).status_code == 204
    for forum_id in ("f", "g"):
        response = client.put("/v1/posts/p", json={"forum_id": forum_id}, headers=ADMIN)
        assert response.status_code == 409
    view = client.get("/v1/posts/p").json
    assert view is not None and view["withdrawn"] and not view["live"]
