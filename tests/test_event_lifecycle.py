"""An event is judged by when the API accepted it, not when a worker applies it: a batch
accepted inside the attribution window counts even though no worker runs until the window
has closed; one accepted after it does not. Real gunicorn, Celery worker and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from core.storage import Keys, request_time
from devtools.redis_server import RedisServer
from tests.processes import ADMIN, Stack, wait_drained, wait_for
from tests.streams import fetch_slates, post_batch

pytestmark = pytest.mark.e2e

WINDOW, GRACE = 3, 120


@pytest.fixture
def stack(private_redis: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(private_redis, tmp_path)
    try:
        yield stack.start(web_workers=1, workers=0, BANDIT_ATTRIBUTION_SECONDS=str(WINDOW),
                          BANDIT_EVENT_GRACE_SECONDS=str(GRACE))  # fmt: skip
    finally:
        stack.stop()


def issued(request_id: str) -> float:
    at = request_time(request_id)
    assert at is not None
    return at


def served_any(base: str) -> bool:
    body = requests.get(f"{base}/v1/recommendations", params={"user_id": "w"}, timeout=5).json()
    return bool(body["items"])


def test_a_batch_accepted_in_the_window_counts_when_a_late_worker_applies_it(
    stack: Stack, private_redis: RedisServer
) -> None:
    response = requests.put(f"{stack.base}/v1/posts/p", json={"forum_id": "f"}, headers=ADMIN,
                            timeout=5)  # fmt: skip
    assert response.status_code == 201, response.text
    wait_for(lambda: served_any(stack.base), 10, "the post in the snapshot")
    in_time, too_late = fetch_slates(stack.base, 2, 1)
    session = requests.Session()
    assert post_batch(session, stack.base, "impression", [(in_time.request_id, "p")]).ok
    assert time.time() - issued(in_time.request_id) < WINDOW, "the machine is too slow"
    wait_for(lambda: time.time() > issued(too_late.request_id) + WINDOW + 0.5, 10, "the window")
    assert post_batch(session, stack.base, "impression", [(too_late.request_id, "p")]).ok
    stack.add_worker()  # no worker ran while the window was open
    stats = redis.Redis.from_url(private_redis.url)
    broker = redis.Redis.from_url(private_redis.url.rsplit("/", 1)[0] + "/1")
    wait_drained(stack.base, stats, broker, 60)
    keys = Keys("pb")
    assert stats.hget(keys.stats("f"), "i:p") == b"1"
    assert stats.exists(keys.served(in_time.request_id))  # kept for the window plus the grace
    assert WINDOW < stats.ttl(keys.served(in_time.request_id)) <= WINDOW + GRACE
