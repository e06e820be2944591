"""An experiment on the real stack (gunicorn, a Celery worker, Redis), driven over HTTP by the
simulated forum world: each variant's CTR agrees with the world's truth for what it showed,
the members split as weighted, and the results count exactly what the worker applied."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from bandits.candidates import IntArray
from bandits.simulate.environments import ForumConfig
from bandits.simulate.recommenders import BoolArray
from bandits.simulate.runner import ForumSetting, environment_rng, run_forum
from bandits.simulate.service import ServiceRecommender
from devtools.redis_server import free_port
from tests.processes import service_env, wait_drained, wait_for_fresh_snapshots, web_and_worker

pytestmark = pytest.mark.e2e
TOKEN = "e2e-admin-token"
VARIANTS = [
    {"name": "ts", "policy": "two_level_ts", "weight": 47.5},
    {"name": "recent", "policy": "recent", "weight": 47.5},
    {"name": "explore", "policy": "explore", "weight": 5},
]
CONFIG = ForumConfig(forums=4, members=200, visits=2000, slate=5, per_forum_cap=5,
                     ctr_mean=0.15, posts_per_visit=0.05, lifetime=400)  # fmt: skip
SEED = 11


class TallyingRecommender(ServiceRecommender):
    """The service, remembering which posts each variant's slates showed (seen) and got
    clicked, so that the truth of what each variant showed is known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown: dict[str, list[int]] = {}
        self.clicks: dict[str, int] = {}
        self.slates: dict[str, int] = {}

    def recommend(self, n: int, **kwargs: Any) -> IntArray:
        posts = super().recommend(n, **kwargs)
        if posts.size:  # an empty slate is neither remembered nor counted
            self.slates[str(self.variant)] = self.slates.get(str(self.variant), 0) + 1
        return posts

    def record(self, shown: IntArray, clicked: BoolArray) -> None:
        variant = str(self.variant)
        self.shown.setdefault(variant, []).extend(shown.tolist())
        self.clicks[variant] = self.clicks.get(variant, 0) + int(np.count_nonzero(clicked))
        super().record(shown, clicked)


@pytest.fixture
def stack(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=TOKEN,
                      BANDIT_PER_FORUM_CAP="5", BANDIT_WORKER_METRICS_PORT=str(port),
                      BANDIT_WORKER_METRICS_HOST="127.0.0.1")  # fmt: skip
    with web_and_worker(env, tmp_path) as running:
        yield running.base, f"http://127.0.0.1:{port}/metrics"


def worker_counts(metrics_url: str) -> dict[tuple[str, str], int]:
    """postbandit_experiment_events_total by (variant, type), from the worker."""
    text = requests.get(metrics_url, timeout=5).text
    return {(s.labels["variant"], s.labels["type"]): int(s.value)
            for family in text_string_to_metric_families(text)
            if family.name == "postbandit_experiment_events"
            for s in family.samples if s.name.endswith("_total")}  # fmt: skip


def test_an_experiment_measures_each_variant_truly_and_counts_exactly(
    stack: tuple[str, str], redis_url: str, broker_url: str
) -> None:
    base, worker_metrics = stack
    body = {"variants": VARIANTS, "control": "ts"}
    answer = requests.put(f"{base}/v1/experiments/e2e", json=body, timeout=5,
                          headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    wait_for_fresh_snapshots(base, after=time.time())
    world = ForumSetting(CONFIG).generate(environment_rng(SEED))
    rec = TallyingRecommender(base, "e2e", TOKEN)
    try:
        run_forum(world, rec, "service", SEED, time.perf_counter())
    finally:
        rec.close()
    wait_drained(base, redis.Redis.from_url(redis_url), redis.Redis.from_url(broker_url), 60)
    result = requests.get(f"{base}/v1/experiments/e2e/results", timeout=10).json()
    by_name = {v["name"]: v for v in result["variants"]}
    applied = worker_counts(worker_metrics)
    report = []
    for name, summary in by_name.items():
        shown = np.array(rec.shown[name])
        # Exact: the results are what the client reported and what the worker counted.
        assert summary["impressions"] == shown.size == applied[name, "impression"], name
        assert summary["clicks"] == rec.clicks[name] == applied[name, "click"], name
        # True: the observed CTR is within 4 sd of the mean true CTR of what it showed
        # (clicks are independent Bernoulli draws with those CTRs).
        truth = world.post_ctr[shown]
        bound = 4 * math.sqrt(float(np.sum(truth * (1 - truth)))) / shown.size
        report.append(f"{name}: CTR {summary['ctr']:.4f} truth {truth.mean():.4f} +- {bound:.4f}")
        assert abs(summary["ctr"] - truth.mean()) <= bound, report
        # One member id per visit: each non-empty slate is a member of its own.
        assert summary["slates"] == summary["members"] == rec.slates[name], name
    assert not result["sample_ratio"]["mismatch"] and result["sample_ratio"]["p_value"] > 0.001
    print("\n".join([*report, f"SRM p = {result['sample_ratio']['p_value']:.3f}",
                     f"members {result['sample_ratio']['members']}"]))  # fmt: skip
