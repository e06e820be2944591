"""``python -m bandits.simulate forum --target URL`` against the real stack (gunicorn + worker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from bandits.simulate.environments import ForumConfig
from bandits.simulate.runner import ForumSetting
from bandits.simulate.service import ServiceError, ServiceRecommender, run_service
from tests.processes import Proc, service_env, start_web, start_worker, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "sim-admin-token"


@pytest.fixture
def target(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[str]:
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=TOKEN,
                      BANDIT_PER_FORUM_CAP="5")  # fmt: skip
    procs: list[Proc] = []
    try:
        web, base = start_web(env, tmp_path, workers=2)
        procs += [web, start_worker(env, tmp_path)]
        yield base
    finally:
        for proc in procs:
            proc.stop()


def totals(base: str) -> tuple[int, int]:
    forums = requests.get(f"{base}/v1/forums", timeout=5).json()["forums"]
    return sum(f["impressions"] for f in forums), sum(f["clicks"] for f in forums)


def test_simulated_visits_reach_the_service_and_are_counted_exactly(target: str) -> None:
    config = ForumConfig(forums=3, members=20, visits=150, lifetime=100, posts_per_visit=0.3,
                         ctr_mean=0.2, slate=5, per_forum_cap=5)  # fmt: skip
    [outcome] = run_service(ForumSetting(config), [4], target, TOKEN, progress=lambda _: None)
    assert outcome.label == "service" and outcome.impressions > 100 and outcome.clicks > 0
    expected = (outcome.impressions, outcome.clicks)
    wait_for(lambda: totals(target) == expected, 20, f"service totals {expected}")


def test_a_refused_request_is_a_clear_error(target: str) -> None:
    rec = ServiceRecommender(target, "x", "wrong-token")
    with pytest.raises(ServiceError, match="PUT /v1/posts/simx-p0: 403"):
        rec.add_posts(np.array([0]), np.array([0]))
    rec.close()


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "https://example.test", "http://"])
def test_target_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ValueError, match="target must be an http://host:port URL"):
        ServiceRecommender(url, "x", TOKEN)
