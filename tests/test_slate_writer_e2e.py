"""What a web process that is stopped loses of the slates it wrote behind its responses
(app.slate_writer), with real gunicorn: SIGTERM, nothing; SIGKILL, only the slates served
since its last completed flush. The flush interval is long here (5 s) so that the kill
lands inside one interval."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests

from core.storage import Storage
from tests.exposition import value
from tests.processes import (
    Proc,
    healthy,
    service_env,
    start_web,
    stop_all,
    wait_for,
    wait_for_fresh_snapshots,
)

pytestmark = pytest.mark.e2e
TOKEN = "writer-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
FLUSH = "5"


def serve(base: str, count: int) -> list[str]:
    """The request ids of ``count`` slates served to distinct members."""
    ids = []
    for i in range(count):
        user = f"m{time.monotonic_ns()}-{i}"
        response = requests.get(f"{base}/v1/recommendations", params={"user_id": user},
                                timeout=5)  # fmt: skip
        assert response.status_code == 200 and response.json()["items"], response.text
        ids.append(response.json()["request_id"])
    return ids


def written(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return value(text, "postbandit_slates_written_total")


def start(redis_url: str, broker_url: str, tmp_path: Path) -> tuple[Proc, str]:
    """gunicorn with one worker and a 5 s flush interval, serving three posts."""
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=TOKEN,
                      BANDIT_SLATE_FLUSH_SECONDS=FLUSH)  # fmt: skip
    web, base = start_web(env, tmp_path, workers=1)
    try:
        for post in ("a", "b", "c"):
            response = requests.put(f"{base}/v1/posts/{post}", json={"forum_id": "f"},
                                    headers=ADMIN, timeout=5)  # fmt: skip
            assert response.status_code == 201, response.text
        wait_for_fresh_snapshots(base, after=time.time(), workers=1)
    except BaseException:
        stop_all([web])
        raise
    return web, base


def test_sigkill_loses_only_the_slates_of_the_last_flush_interval(
    rclient: redis.Redis, redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    storage = Storage(rclient, "pb")
    web, base = start(redis_url, broker_url, tmp_path)
    try:
        flushed = serve(base, 10)
        wait_for(lambda: written(base) == len(flushed), 30, "the first slates to be flushed")
        last = serve(base, 10)  # well within the 5 s until the next flush
        (worker,) = psutil.Process(web.pid).children()
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: not worker.is_running() or worker.status() == "zombie", 10, "the kill")
        # The master starts another worker; the dead one's counters stay in the sum.
        wait_for(lambda: healthy(base), 30, "a new worker")
        total = written(base)
    finally:
        stop_all([web])
    present = storage.serving.lookup(flushed + last)
    assert set(flushed) <= present.keys()  # every slate of a completed flush is in Redis
    assert total == len(present) == len(flushed)  # and only those: the last interval is lost


def test_sigterm_writes_every_slate_served(
    rclient: redis.Redis, redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    storage = Storage(rclient, "pb")
    web, base = start(redis_url, broker_url, tmp_path)
    try:
        ids = serve(base, 20)
        assert storage.serving.lookup(ids).keys() < set(ids)  # not all written yet: 5 s
    finally:
        stop_all([web])
    assert storage.serving.lookup(ids).keys() == set(ids)
