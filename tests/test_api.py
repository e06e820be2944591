"""The HTTP API through Flask's test client, against a real Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from app import create_app
from app.runtime import Runtime
from bandits import post_posterior
from core.events import apply_batch
from core.queue import QUEUE
from tests.conftest import ADMIN, register, written

FORUMS = {"maths": 4, "physics": 3, "jobs": 2}


@pytest.fixture
def catalogue(client: FlaskClient) -> dict[str, str]:
    posts = {}
    for forum, count in FORUMS.items():
        for i in range(count):
            register(client, f"{forum}-{i}", forum)
            posts[f"{forum}-{i}"] = forum
    return posts


def recommend(client: FlaskClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/recommendations", query_string={"user_id": "u1", **params})
    assert response.status_code == 200, response.json
    written(client)
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def test_recommendations_are_distinct_registered_posts(
    client: FlaskClient, catalogue: dict[str, str]
) -> None:
    body = recommend(client, n=5)
    assert set(body) == {"request_id", "policy", "experiment", "variant", "items", "degraded"}
    assert body["policy"] == "two_level_ts" and body["degraded"] is False
    assert body["experiment"] is None and body["variant"] is None  # outside an experiment
    posts = [item["post_id"] for item in body["items"]]
    assert len(posts) == 5 == len(set(posts))
    assert all(catalogue[item["post_id"]] == item["forum_id"] for item in body["items"])
    assert [item["rank"] for item in body["items"]] == [1, 2, 3, 4, 5]


def test_default_n_is_ten_and_fewer_candidates_return_what_there_is(
    client: FlaskClient, catalogue: dict[str, str]
) -> None:
    assert len(recommend(client)["items"]) == len(catalogue) == 9
    assert len(recommend(client, n=50)["items"]) == 9


def test_forums_and_exclude_filter(client: FlaskClient, catalogue: dict[str, str]) -> None:
    body = recommend(client, forums="physics,jobs,nosuchforum", exclude="jobs-0")
    posts = {item["post_id"] for item in body["items"]}
    assert posts == {"physics-0", "physics-1", "physics-2", "jobs-1"}


def test_post_takes_the_query_as_a_json_body(
    client: FlaskClient, catalogue: dict[str, str]
) -> None:
    """With lists far longer than a request line: 500 ids of 64 characters."""
    padding = [f"{i:064d}" for i in range(498)]
    body = {"user_id": "u1", "n": 50, "forums": ["physics", "jobs"],
            "exclude": [*padding, "physics-0", "jobs-1"]}  # fmt: skip
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 200, response.json
    slate: dict[str, Any] = response.json  # type: ignore[assignment]
    assert set(slate) == {"request_id", "policy", "experiment", "variant", "items",
                          "degraded"}  # fmt: skip
    assert {i["post_id"] for i in slate["items"]} == {"physics-1", "physics-2", "jobs-0"}
    assert [i["rank"] for i in slate["items"]] == [1, 2, 3]
    defaults = client.post("/v1/recommendations", json={"user_id": "u1", "exclude": []})
    assert len(defaults.json["items"]) == len(catalogue)  # type: ignore[index]
    two = client.post("/v1/recommendations", json={"user_id": "u1", "n": 2.0})
    assert len(two.json["items"]) == 2  # type: ignore[index]


def test_unknown_forums_only_give_an_empty_slate(
    client: FlaskClient, catalogue: dict[str, str]
) -> None:
    assert recommend(client, forums="nosuchforum")["items"] == []


def test_empty_catalogue_gives_an_empty_slate(client: FlaskClient) -> None:
    body = recommend(client)
    assert body["items"] == [] and body["degraded"] is False


def test_withdrawn_post_is_gone_from_the_next_request(
    client: FlaskClient, catalogue: dict[str, str]
) -> None:
    recommend(client)  # the snapshot now holds every post
    assert client.delete("/v1/posts/maths-0", headers=ADMIN).status_code == 204
    for _ in range(20):
        assert "maths-0" not in {i["post_id"] for i in recommend(client)["items"]}
    assert client.get("/v1/posts/maths-0").json["withdrawn"] is True  # type: ignore[index]


def test_new_post_shows_after_a_refresh(
    client: FlaskClient, rt: Runtime, catalogue: dict[str, str]
) -> None:
    recommend(client)
    register(client, "fresh-1", "jobs")
    assert rt.snapshots.refresh() is True
    assert "fresh-1" in {i["post_id"] for i in recommend(client, n=50)["items"]}


def test_clicked_posts_are_not_recommended_again(
    client: FlaskClient, rt: Runtime, catalogue: dict[str, str]
) -> None:
    body = recommend(client, forums="jobs")
    clicked = body["items"][0]["post_id"]
    apply_batch(rt.storage, "click", [[body["request_id"], clicked]], time.time(), 3600, 3600)
    for _ in range(10):
        assert clicked not in {i["post_id"] for i in recommend(client, forums="jobs")["items"]}
    other = client.get("/v1/recommendations", query_string={"user_id": "u2", "forums": "jobs"})
    assert clicked in {i["post_id"] for i in other.json["items"]}  # type: ignore[index]


def test_events_are_enqueued_for_the_workers(
    client: FlaskClient, broker_url: str, catalogue: dict[str, str]
) -> None:
    rid = recommend(client)["request_id"]
    events = [{"request_id": rid, "post_id": "maths-0"}] * 3
    response = client.post("/v1/impressions", json={"events": events})
    assert response.status_code == 202
    assert response.json == {"accepted": 3}
    assert client.post("/v1/clicks", json={"events": events[:1]}).json == {"accepted": 1}
    assert redis.Redis.from_url(broker_url).llen(QUEUE) == 2


def test_post_view_reports_counts_and_posterior(
    client: FlaskClient, rt: Runtime, catalogue: dict[str, str]
) -> None:
    body = recommend(client, forums="jobs")
    rid = body["request_id"]
    apply_batch(rt.storage, "click", [[rid, body["items"][0]["post_id"]]], time.time(), 60, 60)
    view = client.get(f"/v1/posts/{body['items'][0]['post_id']}").json
    assert view is not None
    assert (view["impressions"], view["clicks"], view["forum_id"]) == (1, 1, "jobs")
    post = view["posterior"]
    assert post["alpha"] > 1 and post["beta"] > 0
    assert post["interval95"][0] < post["mean"] < post["interval95"][1]
    assert view["live"] is True and view["expires_at"] > time.time()


@pytest.mark.parametrize(("window", "jobs"), [(2, (3, 2)), (0, (4, 3))])
def test_the_policy_and_the_post_view_take_the_windowed_forum_counts(
    config: dict[str, Any], window: int, jobs: tuple[int, int]
) -> None:
    """jobs-0 has 3 impressions and 3 clicks, jobs-1 one impression: over each post's first
    2 impressions the forum has 3 and 2 clicks; over every impression, 4 and 3."""
    app = create_app({**config, "BANDIT_FORUM_WINDOW": str(window)})
    try:
        client, rt = app.test_client(), app.extensions["postbandit"]
        for post_id in ("jobs-0", "jobs-1", "jobs-2"):
            register(client, post_id, "jobs")
        rt.storage.counting.apply_events("c", [(f"r{r}", "jobs-0", "jobs") for r in range(3)], 60)
        rt.storage.counting.apply_events("i", [("r0", "jobs-1", "jobs")], 60)
        snap = rt.snapshots.get()
        assert snap is not None
        forum = snap.forum_index["jobs"]
        cands = snap.candidates
        assert (cands.forum_impressions[forum], cands.forum_clicks[forum]) == jobs
        alpha, beta = post_posterior([0], [0], [jobs[0]], [jobs[1]], jobs[0], jobs[1], 10.0)
        posterior = client.get("/v1/posts/jobs-2").json["posterior"]  # its forum's prior
        assert (posterior["alpha"], posterior["beta"]) == pytest.approx((alpha[0], beta[0]))
        view = client.get("/v1/forums/jobs").json
        assert (view["impressions"], view["clicks"]) == (4, 3)  # every impression, always
        [listed] = client.get("/v1/forums").json["forums"]
        assert listed == view
        counts = {"impressions": jobs[0], "clicks": jobs[1], "window": window,
                  "half_life_seconds": None}  # fmt: skip
        assert view["policy_counts"] == counts
        assert view["prior_mean"] == pytest.approx(posterior["mean"])  # a new post's prior
    finally:
        app.extensions["postbandit"].snapshots.stop()


def test_forum_views(client: FlaskClient, catalogue: dict[str, str]) -> None:
    forums = client.get("/v1/forums").json["forums"]  # type: ignore[index]
    assert {f["forum_id"]: f["live_posts"] for f in forums} == FORUMS
    maths = client.get("/v1/forums/maths").json
    assert maths == {
        "forum_id": "maths",
        "impressions": 0,
        "clicks": 0,
        "ctr": None,
        "live_posts": 4,
        "policy_counts": {"impressions": 0, "clicks": 0, "window": 20, "half_life_seconds": None},
        "prior_mean": 0.5,
    }


def test_forum_prior_means_are_those_of_new_posts(
    client: FlaskClient, rt: Runtime, catalogue: dict[str, str]
) -> None:
    """Each forum's prior mean, shrunk towards the global mean, centres its new posts' priors."""
    rt.storage.counting.apply_events("c", [(f"r{r}", "maths-0", "maths") for r in range(3)], 60)
    forums = {f["forum_id"]: f for f in client.get("/v1/forums").json["forums"]}  # type: ignore[index]
    assert forums["maths"]["policy_counts"] == {
        "impressions": 3,
        "clicks": 3,
        "window": 20,
        "half_life_seconds": None,
    }
    for forum_id, post_id in (("maths", "maths-1"), ("physics", "physics-0")):
        posterior = client.get(f"/v1/posts/{post_id}").json["posterior"]  # type: ignore[index]
        assert forums[forum_id]["prior_mean"] == pytest.approx(posterior["mean"])
    assert forums["maths"]["prior_mean"] > forums["physics"]["prior_mean"] > 0.5


def test_put_updates_ttl_and_reports_created(client: FlaskClient) -> None:
    first = client.put("/v1/posts/p1", json={"forum_id": "f"}, headers=ADMIN)
    again = client.put("/v1/posts/p1", json={"forum_id": "f", "ttl_seconds": 60}, headers=ADMIN)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["expires_at"] < first.json["expires_at"]  # type: ignore[index]


def put(client: FlaskClient, post_id: str, **body: Any) -> dict[str, Any]:
    response = client.put(f"/v1/posts/{post_id}", json={"forum_id": "f", **body}, headers=ADMIN)
    assert response.status_code in (200, 201), response.json
    view: dict[str, Any] = response.json  # type: ignore[assignment]
    return view


def test_an_update_keeps_the_age_and_lifetime_it_does_not_give(client: FlaskClient) -> None:
    start = float(int(time.time()) - 1000)
    first = put(client, "p1", created_at=iso(start), ttl_seconds=3600)
    assert (first["created_at"], first["expires_at"]) == (start, start + 3600)
    again = put(client, "p1")
    assert (again["created_at"], again["expires_at"]) == (start, start + 3600)
    longer = put(client, "p1", ttl_seconds=7200)
    assert (longer["created_at"], longer["expires_at"]) == (start, start + 7200)
    moved = put(client, "p1", created_at=iso(start + 500))
    assert (moved["created_at"], moved["expires_at"]) == (start + 500, start + 500 + 7200)


def test_a_post_older_than_its_ttl_is_registered_but_never_a_candidate(
    client: FlaskClient,
) -> None:
    response = client.put("/v1/posts/old", headers=ADMIN, json={
        "forum_id": "f", "created_at": "2020-01-01T00:00:00Z", "ttl_seconds": 60})  # fmt: skip
    assert response.status_code == 201, response.json
    register(client, "new", "f")
    assert [i["post_id"] for i in recommend(client)["items"]] == ["new"]
    old = client.get("/v1/posts/old").json
    assert old["live"] is False and old["expires_at"] == 1577836860  # type: ignore[index]
    assert client.get("/v1/forums/f").json["live_posts"] == 1  # type: ignore[index]
    ancient = put(client, "ancient", created_at="0001-01-01T00:00:00+23:59")
    assert ancient["live"] is False and ancient["created_at"] == -62135683140


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"redis": True, "broker": True}  # type: ignore[index]


def test_metrics_count_requests_by_rule(client: FlaskClient, catalogue: dict[str, str]) -> None:
    recommend(client)
    client.get("/v1/posts/nosuchpost")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/v1/posts/<post_id>",method="GET",status="404"' in text
    assert "nosuchpost" not in text
    assert "postbandit_recommendations_total" in text
