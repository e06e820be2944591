"""A Sentinel-managed broker end to end: gunicorn and the real Celery worker with
``CELERY_BROKER_URL=sentinel://...``; an event batch is published, consumed and applied, and
``/readyz`` and the queue-depth metric read the master the sentinels name.

Statistics are on a plain Redis here: on a Redis Cluster, serving and applying events do not
run yet (tests/test_cluster_storage.py lists why), so the same test with ``REDIS_URL`` on the
cluster waits for that follow-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from core.queue import QUEUE
from devtools.redis_sentinel import SentinelGroup
from tests.processes import service_env, start_web, stop_all, wait_for, web_and_worker

pytestmark = pytest.mark.e2e
TOKEN = "sentinel-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def sentinel_env(redis_url: str, group: SentinelGroup, tmp: Path) -> dict[str, str]:
    return service_env(redis_url, group.url, tmp, BANDIT_ADMIN_TOKEN=TOKEN,
                       BANDIT_BROKER_MASTER_NAME=group.master_name)  # fmt: skip


@pytest.fixture
def stack(redis_url: str, sentinel_group: SentinelGroup, tmp_path: Path) -> Iterator[str]:
    with web_and_worker(sentinel_env(redis_url, sentinel_group, tmp_path), tmp_path) as procs:
        yield procs.base


@pytest.fixture
def web_only(redis_url: str, sentinel_group: SentinelGroup, tmp_path: Path) -> Iterator[str]:
    """gunicorn without a worker: what is queued stays queued."""
    web, base = start_web(sentinel_env(redis_url, sentinel_group, tmp_path), tmp_path)
    try:
        yield base
    finally:
        stop_all([web])


def recommend(base: str) -> dict[str, Any]:
    slate: dict[str, Any] = requests.get(f"{base}/v1/recommendations?user_id=alice&n=1",
                                         timeout=5).json()  # fmt: skip
    return slate


def impressions(base: str, post_id: str) -> int:
    return int(requests.get(f"{base}/v1/posts/{post_id}", timeout=5).json()["impressions"])


def test_the_worker_applies_a_batch_from_a_sentinel_managed_broker(
    stack: str, sentinel_group: SentinelGroup
) -> None:
    put = requests.put(f"{stack}/v1/posts/p1", json={"forum_id": "maths"}, headers=ADMIN,
                       timeout=5)  # fmt: skip
    assert put.status_code == 201, put.text
    slates: list[dict[str, Any]] = []
    wait_for(lambda: bool(slates.append(recommend(stack)) or slates[-1]["items"]), 30,
             "the web tier's snapshot to hold the new post")  # fmt: skip
    event = {"request_id": slates[-1]["request_id"], "post_id": "p1"}
    posted = requests.post(f"{stack}/v1/impressions", json={"events": [event]}, timeout=5)
    assert posted.status_code == 202, posted.text
    wait_for(lambda: impressions(stack, "p1") == 1, 30, "the impression to be applied")
    master = redis.Redis(port=sentinel_group.master().port)
    try:
        # The task is acknowledged just after it applied the event: wait for the broker to
        # hold nothing queued nor unacknowledged.
        wait_for(lambda: master.llen(QUEUE) == 0 and master.hlen("unacked") == 0, 30,
                 "the broker to be left empty")  # fmt: skip
    finally:
        master.close()


def test_readyz_and_the_queue_depth_read_the_sentinels_master(
    web_only: str, sentinel_group: SentinelGroup
) -> None:
    ready = requests.get(f"{web_only}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": True, "broker": True}
    master = redis.Redis(port=sentinel_group.master().port)
    try:
        master.lpush(QUEUE, "{}", "{}")
        metrics = requests.get(f"{web_only}/metrics", timeout=5).text
    finally:
        master.close()
    assert f'postbandit_queue_depth{{queue="{QUEUE}"}} 2.0' in metrics
