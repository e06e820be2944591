"""Each variant learns only from its own slates while an experiment runs, from the same
start; everyone learns from all the data again once it stops. Through the storage, the
snapshot and the policy, as the request path does."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from app.runtime import Runtime
from core.events import apply_batch
from core.experiments.assignment import Allocation
from tests.conftest import ADMIN, register, written

GREEDY_AB = [
    {"name": "a", "policy": "greedy", "weight": 1},
    {"name": "b", "policy": "greedy", "weight": 1},
]
ALLOCATION = Allocation.of([("a", 1), ("b", 1)])


@pytest.fixture
def posts(client: FlaskClient) -> list[str]:
    ids = [f"p{i}" for i in range(6)]
    for post in ids:
        register(client, post, "f")
    return ids


def slate(client: FlaskClient, user: str, n: int = 6) -> dict[str, Any]:
    answer = client.get("/v1/recommendations", query_string={"user_id": user, "n": n})
    assert answer.status_code == 200, answer.json
    written(client)
    body: dict[str, Any] = answer.json
    return body


def click(rt: Runtime, body: dict[str, Any], post: str) -> None:
    """Count a click of ``post`` on the slate ``body`` (and its impression)."""
    events = [[body["request_id"], post]]
    apply_batch(rt.storage, "click", events, time.time(), 3600, 0)


def member_of(variant: str, start: int = 0) -> str:
    return next(f"m{i}" for i in itertools.count(start)
                if ALLOCATION.assign("exp", f"m{i}") == variant)  # fmt: skip


def counts(candidates: Any) -> np.ndarray:
    return np.column_stack([candidates.post_impressions, candidates.post_clicks,
                            candidates.post_forum])  # fmt: skip


def test_a_variants_clicks_move_only_its_own_posterior(
    client: FlaskClient, rt: Runtime, posts: list[str]
) -> None:
    # Before the experiment: p0 has the best record, p5 the worst (shown, never clicked).
    before_slates = [slate(client, f"pre{i}") for i in range(20)]
    for i, body in enumerate(before_slates):
        apply_batch(rt.storage, "impression", [[body["request_id"], p] for p in posts],
                    time.time(), 3600, 0)  # fmt: skip
        if i % 2 == 0:
            click(rt, body, "p0")
    rt.snapshots.refresh()
    learnt = rt.snapshots.current()
    assert learnt is not None
    start = client.put("/v1/experiments/exp", json={"variants": GREEDY_AB, "control": "a"},
                       headers=ADMIN)  # fmt: skip
    assert start.status_code == 201
    rt.snapshots.refresh()
    # Variant b's slates click p5 thirty times: b's greedy then ranks p5 first, a's not.
    for i in range(30):
        body = slate(client, member_of("b", 100 * i))
        click(rt, body, "p5")
    rt.snapshots.refresh()
    snap = rt.snapshots.current()
    assert snap is not None and set(snap.variant_candidates) == {"a", "b"}
    np.testing.assert_array_equal(counts(snap.candidates_of("a")), counts(learnt.candidates))
    row = snap.post_index["p5"]
    p5 = snap.candidate_of_row[row]
    assert snap.candidates_of("b").post_clicks[p5] == 30
    shown_before = learnt.candidates.post_impressions[p5]
    assert snap.candidates_of("b").post_impressions[p5] == shown_before + 30
    assert snap.candidates.post_clicks[p5] == 30  # the totals hold every slate's
    assert slate(client, member_of("a", 5000))["items"][0]["post_id"] == "p0"
    assert slate(client, member_of("b", 5000))["items"][0]["post_id"] == "p5"
    # The post's totals stay the sums over every slate, with the variants beside them.
    post = client.get("/v1/posts/p5").json
    assert (post["impressions"], post["clicks"]) == (50, 30)
    assert post["variants"] == {"a": {"impressions": 0, "clicks": 0},
                                "b": {"impressions": 30, "clicks": 30}}  # fmt: skip
    forum = client.get("/v1/forums/f").json
    assert forum["variants"]["b"]["clicks"] == 30 and forum["variants"]["a"]["clicks"] == 0
    # Stopped: everyone learns from all the data again.
    stopped = client.post("/v1/experiments/exp/stop", json={"promote": "a"}, headers=ADMIN)
    assert stopped.status_code == 200
    rt.snapshots.refresh()
    after = rt.snapshots.current()
    assert after is not None and after.variant_candidates == {}
    assert after.candidates_of(None).post_clicks[after.candidate_of_row[row]] == 30
    assert slate(client, member_of("a", 9000))["items"][0]["post_id"] == "p5"
    assert "variants" not in client.get("/v1/posts/p5").json


def test_a_new_experiment_starts_from_everything_learnt_before_it(
    client: FlaskClient, rt: Runtime, posts: list[str]
) -> None:
    """The second experiment's variants start from the totals, the first one's slates in."""
    for experiment in ("one", "two"):
        body = {"variants": GREEDY_AB, "control": "a"}
        assert client.put(f"/v1/experiments/{experiment}", json=body,
                          headers=ADMIN).status_code == 201  # fmt: skip
        rt.snapshots.refresh()
        served = slate(client, f"someone-{experiment}")
        click(rt, served, "p3")
        assert client.post(f"/v1/experiments/{experiment}/stop",
                           headers=ADMIN).status_code == 200  # fmt: skip
    body = {"variants": GREEDY_AB, "control": "a"}
    assert client.put("/v1/experiments/three", json=body, headers=ADMIN).status_code == 201
    rt.snapshots.refresh()
    snap = rt.snapshots.current()
    assert snap is not None
    p3 = snap.candidate_of_row[snap.post_index["p3"]]
    for variant in "ab":
        assert snap.candidates_of(variant).post_clicks[p3] == 2
