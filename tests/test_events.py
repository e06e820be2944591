"""Attribution and counting of events (the worker's logic) against a real Redis."""

from __future__ import annotations

import time

import pytest

from core.events import apply_batch
from core.storage import Served, Storage, new_request_id

WINDOW = 3600


def setup_served(storage: Storage, user: str = "u1") -> str:
    now = time.time()
    for post, forum in (("p1", "f1"), ("p2", "f2")):
        storage.catalogue.put_post(post, forum, now, now + 3600, retention=60)
    request_id = new_request_id(user)
    storage.serving.serve(
        Served(request_id, user, "two_level_ts", {"p1": "f1", "p2": "f2"}), WINDOW
    )
    return request_id


def apply(storage: Storage, event_type: str, events: list[list[str]]) -> dict[str, int]:
    return dict(apply_batch(storage, event_type, events, time.time(), WINDOW, WINDOW).results)


def test_outcomes_by_reason(storage: Storage) -> None:
    rid = setup_served(storage)
    expired = new_request_id("u1", time.time() - 2 * WINDOW)
    events = [[rid, "p1"], [rid, "p1"], [rid, "p9"], ["unknown", "p1"], [expired, "p1"]]
    assert apply(storage, "impression", events) == {
        "counted": 1,
        "duplicate": 1,
        "not_served": 1,
        "unknown_request": 1,
        "expired": 1,
    }
    assert storage.catalogue.get_post("p1").impressions == 1  # type: ignore[union-attr]


def test_click_before_impression_counts_both_once(storage: Storage) -> None:
    rid = setup_served(storage)
    assert apply(storage, "click", [[rid, "p2"]]) == {"counted": 1}
    assert apply(storage, "impression", [[rid, "p2"]]) == {"duplicate": 1}
    post = storage.catalogue.get_post("p2")
    assert post is not None
    assert (post.impressions, post.clicks) == (1, 1)


def test_clicked_posts_are_remembered_for_the_member(storage: Storage) -> None:
    rid = setup_served(storage, user="alice")
    apply(storage, "click", [[rid, "p1"]])
    since = (time.time() - WINDOW, time.time())
    slate = {"p1": "f1", "p2": "f2"}
    hidden = storage.serving.serve(
        Served(new_request_id("alice"), "alice", "random", slate), 60, None, since
    )
    assert hidden is not None and hidden.clicked == ["p1"]
    assert (
        storage.serving.serve(
            Served(new_request_id("bob"), "bob", "random", slate), 60, None, since
        )
        is None
    )


def test_replaying_a_batch_changes_nothing(storage: Storage) -> None:
    rid = setup_served(storage)
    batch = [[rid, "p1"], [rid, "p2"]]
    apply(storage, "click", batch)
    assert apply(storage, "click", batch) == {"duplicate": 2}
    assert apply(storage, "impression", batch) == {"duplicate": 2}
    forums = {f.forum_id: f for f in storage.catalogue.get_forums(["f1", "f2"], time.time())}
    assert [(f.impressions, f.clicks) for f in forums.values()] == [(1, 1), (1, 1)]


def test_unknown_event_type_is_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="event_type must be one of"):
        apply(storage, "view", [["r", "p"]])
