"""End to end: gunicorn (2 workers) and a Celery worker as real processes, driven over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processes import service_env, wait_for, wait_for_fresh_snapshots, web_and_worker

TOKEN = "e2e-admin-token-0123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.e2e


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def stack(
    redis_url: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The services on one Redis, or with statistics on the session's Redis Cluster (the
    broker is then the session's Redis)."""
    extra = {"BANDIT_ADMIN_TOKEN": TOKEN, "BANDIT_ENV": "production"}
    if request.param == "cluster":
        redis_url = request.getfixturevalue("cluster").url
        extra["BANDIT_REDIS_CLUSTER"] = "true"
    env = service_env(redis_url, broker_url, tmp_path, **extra)
    with web_and_worker(env, tmp_path) as running:
        yield running.base


def post_counts(base: str, post_id: str) -> tuple[int, int]:
    body = requests.get(f"{base}/v1/posts/{post_id}", timeout=5).json()
    return body["impressions"], body["clicks"]


def slate(base: str, **params: Any) -> dict[str, Any]:
    response = requests.get(
        f"{base}/v1/recommendations", params={"user_id": "m1", **params}, timeout=5
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_register_recommend_report_and_count_exactly(stack: str) -> None:
    base = stack
    for i in range(6):
        response = requests.put(
            f"{base}/v1/posts/p{i}", json={"forum_id": f"f{i % 2}"}, headers=ADMIN, timeout=5
        )
        assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())
    body = slate(base, n=3)
    rid = body["request_id"]
    a, b, c = (item["post_id"] for item in body["items"])

    def send(kind: str, events: list[dict[str, str]]) -> None:
        response = requests.post(f"{base}/v1/{kind}", json={"events": events}, timeout=5)
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": len(events)}

    impressions = [{"request_id": rid, "post_id": p} for p in (a, b, c)]
    send("impressions", impressions)
    send("impressions", impressions[:2])  # a retried batch: duplicates
    send("clicks", [{"request_id": rid, "post_id": a}] * 2)  # a double click
    send("clicks", [{"request_id": rid, "post_id": "p-not-served"}])
    # A click whose impression never arrives counts that impression too.
    other = slate(base, n=3, exclude=f"{a},{b},{c}")
    lonely = other["items"][0]["post_id"]
    send("clicks", [{"request_id": other["request_id"], "post_id": lonely}])

    expected = {a: (1, 1), b: (1, 0), c: (1, 0), lonely: (1, 1)}
    wait_for(
        lambda: {p: post_counts(base, p) for p in expected} == expected, 15, f"counts {expected}"
    )
    forums = {
        f["forum_id"]: f for f in requests.get(f"{base}/v1/forums", timeout=5).json()["forums"]
    }
    assert sum(f["impressions"] for f in forums.values()) == 4
    assert sum(f["clicks"] for f in forums.values()) == 2

    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert 'postbandit_events_received_total{type="impression"} 5.0' in metrics
    assert 'postbandit_events_received_total{type="click"} 4.0' in metrics


def test_production_refuses_anonymous_catalogue_writes(stack: str) -> None:
    response = requests.put(f"{stack}/v1/posts/x", json={"forum_id": "f"}, timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert requests.get(f"{stack}/readyz", timeout=5).status_code == 200
