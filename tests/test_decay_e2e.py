"""End to end with BANDIT_HALF_LIFE_SECONDS: gunicorn and a Celery worker as real processes;
GET /v1/posts shows the exact totals and the decayed counts, which follow the closed form
from the times the counting step recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.processes import service_env, wait_for, wait_for_fresh_snapshots, web_and_worker

TOKEN = "decay-admin-token-0123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
HALF_LIFE = 60.0
pytestmark = pytest.mark.e2e


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def stack(
    redis_url: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Any]]:
    """The services and a client of their statistics Redis (or Redis Cluster)."""
    extra = {"BANDIT_ADMIN_TOKEN": TOKEN, "BANDIT_HALF_LIFE_SECONDS": str(int(HALF_LIFE))}
    client: Any = redis.Redis.from_url(redis_url)
    if request.param == "cluster":
        redis_url = request.getfixturevalue("cluster").url
        extra["BANDIT_REDIS_CLUSTER"] = "true"
        client = redis.RedisCluster.from_url(redis_url)
    env = service_env(redis_url, broker_url, tmp_path, **extra)
    with web_and_worker(env, tmp_path) as running:
        yield running.base, client
    client.close()


def send(base: str, kind: str, events: list[dict[str, str]]) -> None:
    response = requests.post(f"{base}/v1/{kind}", json={"events": events}, timeout=5)
    assert response.status_code == 202, response.text


def view(base: str, post_id: str) -> dict[str, Any]:
    response = requests.get(f"{base}/v1/posts/{post_id}", timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_post_shows_its_exact_and_decayed_counts(stack: tuple[str, Any]) -> None:
    base, client = stack
    for post_id in ("a", "b"):
        answer = requests.put(f"{base}/v1/posts/{post_id}", json={"forum_id": "f"},
                              headers=ADMIN, timeout=5)  # fmt: skip
        assert answer.status_code == 201, answer.text
    wait_for_fresh_snapshots(base, after=time.time())
    served = requests.get(f"{base}/v1/recommendations", params={"user_id": "m", "n": 2},
                          timeout=5).json()  # fmt: skip
    rid = served["request_id"]
    sent_from = time.time()
    impressions = [{"request_id": rid, "post_id": p} for p in ("a", "b")]
    send(base, "impressions", impressions)
    send(base, "impressions", impressions)  # a retried batch: counts nothing, decays nothing
    # The click after its impression counted (else it would count the impression itself).
    wait_for(lambda: all(view(base, p)["impressions"] == 1 for p in ("a", "b")), 30,
             "the impressions counted")  # fmt: skip
    send(base, "clicks", [{"request_id": rid, "post_id": "a"}])
    sent_until = time.time()
    wait_for(lambda: view(base, "a")["clicks"] == 1, 30, "the click counted")

    stats = {k.decode(): float(v) for k, v in client.hgetall("pb:{f:f}:stats").items()}
    # One impression of b, at the time its batch was accepted: 1 at that time.
    assert stats["di:b"] == 1.0 and stats["dc:b"] == 0.0
    assert sent_from <= stats["dt:b"] <= sent_until
    assert stats["dc:a"] == 1.0 and stats["dt:b"] <= stats["dt:a"] <= sent_until
    assert stats["di:a"] == pytest.approx(2 ** (-(stats["dt:a"] - stats["dt:b"]) / HALF_LIFE))
    for post_id in ("a", "b"):
        read_from = time.time()
        body = view(base, post_id)
        read_until = time.time()
        assert body["half_life_seconds"] == HALF_LIFE
        exact = (1, 1) if post_id == "a" else (1, 0)
        assert (body["impressions"], body["clicks"]) == exact  # the totals are unchanged
        last = stats[f"dt:{post_id}"]
        for kind in ("impressions", "clicks"):
            stored = stats[f"d{kind[0]}:{post_id}"]
            decayed = body["decayed"][kind]
            # Read at some moment between read_from and read_until.
            low = stored * 2 ** (-(read_until - last) / HALF_LIFE)
            high = stored * 2 ** (-(read_from - last) / HALF_LIFE)
            assert low - 1e-12 <= decayed <= high + 1e-12, (post_id, kind)
