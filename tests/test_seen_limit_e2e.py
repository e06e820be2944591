"""The seen-limit through the real stack: gunicorn (2 workers) and a Celery worker as real
processes, driven over HTTP; impressions posted and applied before each next slate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.exposition import value
from tests.processes import (
    service_env,
    wait_drained,
    wait_for_fresh_snapshots,
    web_and_worker,
)

pytestmark = pytest.mark.e2e
TOKEN = "seen-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["3", "0"], ids=["limit3", "off"])
def stack(
    redis_url: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, int]]:
    """The services with ``BANDIT_SEEN_LIMIT`` 3 (the default) or 0; (URL, the limit)."""
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=TOKEN,
                      BANDIT_SEEN_LIMIT=request.param)  # fmt: skip
    with web_and_worker(env, tmp_path) as running:
        yield running.base, int(request.param)


def slate(base: str, user: str) -> tuple[str, list[str]]:
    """(request id, posts) of a two-post slate for ``user``."""
    response = requests.get(
        f"{base}/v1/recommendations", params={"user_id": user, "n": 2}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()["request_id"], sorted(i["post_id"] for i in response.json()["items"])


def test_a_member_shown_a_post_three_times_without_a_click_does_not_get_it_a_fourth_time(
    stack: tuple[str, int], redis_url: str, broker_url: str
) -> None:
    base, limit = stack
    for post in ("shown", "scrolled"):
        response = requests.put(f"{base}/v1/posts/{post}", json={"forum_id": "f"}, headers=ADMIN,
                                timeout=5)  # fmt: skip
        assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())
    # Both posts are served each time; the app displays (reports an impression of) one only.
    for _ in range(3):
        request_id, posts = slate(base, "m1")
        assert posts == ["scrolled", "shown"]
        events = {"events": [{"request_id": request_id, "post_id": "shown"}]}
        assert requests.post(f"{base}/v1/impressions", json=events, timeout=5).status_code == 202
        with redis.Redis.from_url(redis_url) as stats, redis.Redis.from_url(broker_url) as broker:
            wait_drained(base, stats, broker, 30)  # applied, and recorded for the member
    fourth = slate(base, "m1")[1]
    assert fourth == (["scrolled"] if limit else ["scrolled", "shown"])
    assert slate(base, "m2")[1] == ["scrolled", "shown"]  # another member still gets it
    text = requests.get(f"{base}/metrics", timeout=5).text
    refused = value(text, "postbandit_seen_limited_slates_total", policy="two_level_ts")
    assert refused == (1 if limit else 0)
