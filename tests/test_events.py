"""Attribution and counting of events (the worker's logic) against a real Redis."""

from __future__ import annotations

import time

import pytest

from core.events import apply_batch
from core.storage import Served, Storage, new_request_id, request_time

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
    since = time.time() - WINDOW
    assert storage.serving.to_hide("alice", since, since).clicked == ["p1"]
    assert storage.serving.to_hide("bob", since, since).clicked == []


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


GRACE = 600


def late(storage: Storage, accepted_after: float, applied_after: float) -> dict[str, int]:
    """An impression of a slate served now (request id time t0), accepted ``accepted_after``
    and applied ``applied_after`` seconds after t0 (injected clock; the slate is kept for
    the window plus the grace, as the web tier keeps it)."""
    t0 = time.time()
    rid = new_request_id("u1", t0)
    storage.serving.serve(Served(rid, "u1", "random", {"p1": "f1"}), WINDOW + GRACE)
    outcome = apply_batch(storage, "impression", [[rid, "p1"]], t0 + applied_after, WINDOW,
                          WINDOW, accepted_at=t0 + accepted_after, grace=GRACE)  # fmt: skip
    return dict(outcome.results)


def test_an_event_accepted_in_the_window_counts_however_late_it_is_applied(
    storage: Storage,
) -> None:
    setup_served(storage)
    assert late(storage, WINDOW - 1, WINDOW + 60) == {"counted": 1}
    assert late(storage, WINDOW - 1, WINDOW + GRACE - 1) == {"counted": 1}


def test_an_event_accepted_after_the_window_is_expired(storage: Storage) -> None:
    setup_served(storage)
    assert late(storage, WINDOW + 1, WINDOW + 1) == {"expired": 1}
    assert late(storage, WINDOW + 1, WINDOW + 60) == {"expired": 1}


def test_an_event_applied_after_the_grace_is_expired_even_if_its_slate_lingers(
    storage: Storage,
) -> None:
    """Past the window plus the grace its de-dup markers may be gone: counting it could count
    it twice."""
    setup_served(storage)
    assert late(storage, WINDOW - 1, WINDOW + GRACE + 1) == {"expired": 1}


def test_de_dup_markers_outlive_every_moment_an_event_may_be_applied(storage: Storage) -> None:
    rid = new_request_id("u1")
    t0 = request_time(rid)
    assert t0 is not None
    storage.serving.serve(Served(rid, "u1", "random", {"p1": "f1"}), WINDOW + GRACE)
    apply_batch(storage, "impression", [[rid, "p1"]], t0, WINDOW, WINDOW, grace=GRACE)
    assert storage.client.ttl(storage.keys.seen("f1", rid)) > WINDOW + GRACE
    # A replay at the last moment it may be applied is still a duplicate.
    again = apply_batch(storage, "impression", [[rid, "p1"]], t0 + WINDOW + GRACE - 1, WINDOW,
                        WINDOW, accepted_at=t0 + WINDOW, grace=GRACE)  # fmt: skip
    assert dict(again.results) == {"duplicate": 1}
