"""Metrics of the web tier (Flask test client, real Redis) and the catalogue in docs/metrics.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Retry
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from app import create_app
from app.runtime import Runtime
from core import metrics
from core.storage import Storage
from devtools.redis_server import free_port
from tests.conftest import register
from tests.exposition import samples, value
from workers.tasks import MeteredTask

ROOT = Path(__file__).resolve().parent.parent
# variant: of the running experiment, at most 10 names an experiment (app.experiment_schemas).
ALLOWED_LABELS = {"endpoint", "method", "status", "policy", "result", "type", "task", "outcome",
                  "operation", "role", "queue", "variant", "source"}  # fmt: skip
POLICY = "two_level_ts"


def defined() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of every metric of core.metrics, scrape-time ones included."""
    found = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            family = metric.describe()[0]
            name = family.name + ("_total" if family.type == "counter" else "")
            found[name] = (family.type, tuple(metric._labelnames))
    deps = metrics.Dependencies(
        {"statistics": True}, {"q": 1}, oldest_pending_age=2.0, srm_p_value=0.5
    )
    for family in metrics.DependencyCollector(lambda: deps).collect():
        found[family.name] = (family.type, tuple(sorted(family.samples[0].labels)))
    return found


def catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of the rows of docs/metrics.md."""
    rows = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        match = re.match(r"\|\s*`(postbandit_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if match:
            labels = tuple(re.findall(r"`(\w+)`", match.group(3)))
            rows[match.group(1)] = (match.group(2), labels)
    return rows


def test_the_catalogue_lists_every_metric_with_its_type_and_labels() -> None:
    assert catalogue() == defined()


def test_names_and_labels_follow_the_conventions() -> None:
    for name, (kind, labels) in defined().items():
        assert re.fullmatch(r"postbandit_[a-z_]+", name), name
        assert name.endswith("_total") == (kind == "counter"), name
        assert set(labels) <= ALLOWED_LABELS, (name, labels)
        if "duration" in name or "lag" in name:
            assert name.endswith("_seconds"), name


def scrape(client: FlaskClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


@pytest.fixture
def catalogue_posts(client: FlaskClient) -> None:
    for i in range(5):
        register(client, f"p{i}", f"f{i % 2}")


def test_slates_empty_slates_and_live_candidates(
    client: FlaskClient, rt: Runtime, catalogue_posts: None
) -> None:
    before = scrape(client)
    client.get("/v1/recommendations", query_string={"user_id": "u", "n": 3})
    client.get("/v1/recommendations", query_string={"user_id": "u", "forums": "nosuch"})
    refreshed = time.time()
    rt.snapshots.refresh()
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("postbandit_recommendations_total", policy=POLICY, result="ok") == 1
    assert delta("postbandit_recommendations_total", policy=POLICY, result="empty") == 1
    assert delta("postbandit_recommendations_degraded_total", policy=POLICY) == 0
    assert delta("postbandit_slate_items_count", policy=POLICY) == 2
    assert delta("postbandit_slate_items_sum", policy=POLICY) == 3
    assert value(after, "postbandit_live_posts") == 5
    assert value(after, "postbandit_live_forums") == 2
    assert refreshed <= value(after, "postbandit_snapshot_timestamp_seconds") <= time.time()
    assert value(after, "postbandit_process_resident_memory_bytes") > 10_000_000


def test_redis_failing_mid_request_degrades_and_is_counted(
    client: FlaskClient, rt: Runtime, catalogue_posts: None
) -> None:
    client.get("/v1/recommendations", query_string={"user_id": "u"})  # snapshot loaded
    before = scrape(client)
    dead = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    rt.storage = Storage(dead, "pb", rt.settings.decision_log_maxlen)
    body = client.get("/v1/recommendations", query_string={"user_id": "u"}).json
    assert body is not None and body["degraded"] is True and len(body["items"]) == 5
    after = scrape(client)
    for name, labels in [
        ("postbandit_recommendations_degraded_total", {"policy": POLICY}),
        ("postbandit_redis_errors_total", {"operation": "remember_served"}),
        ("postbandit_redis_errors_total", {"operation": "probe"}),
    ]:
        assert value(after, name, **labels) - value(before, name, **labels) == 1, name
    # The request's one round trip failed once: one Redis timeout per degraded request.
    assert value(after, "postbandit_redis_up", role="statistics") == 0


def test_queue_depth_and_redis_up_are_read_at_scrape_time(
    client: FlaskClient, catalogue_posts: None
) -> None:
    rid = client.get("/v1/recommendations", query_string={"user_id": "u"}).json["request_id"]  # type: ignore[index]
    before = scrape(client)
    assert value(before, "postbandit_queue_depth", queue="postbandit.events") == 0
    assert value(before, "postbandit_oldest_pending_batch_age_seconds") == 0  # journal empty
    posted = time.time()
    for kind in ("impressions", "clicks", "impressions"):
        events = [{"request_id": rid, "post_id": "p0"}]
        response = client.post(f"/v1/{kind}", json={"events": events})
        assert response.status_code == 202
    after = scrape(client)
    assert value(after, "postbandit_queue_depth", queue="postbandit.events") == 3  # no worker
    age = value(after, "postbandit_oldest_pending_batch_age_seconds")
    assert 0 < age <= time.time() - posted
    assert value(after, "postbandit_redis_up", role="statistics") == 1
    assert value(after, "postbandit_redis_up", role="broker") == 1
    received = value(after, "postbandit_events_received_total", type="impression")
    assert received - value(before, "postbandit_events_received_total", type="impression") == 2


@pytest.fixture
def unreachable_app(config: dict[str, Any]) -> Iterator[Flask]:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    flask_app = create_app({**config, "REDIS_URL": dead, "CELERY_BROKER_URL": dead})
    yield flask_app
    flask_app.extensions["postbandit"].snapshots.stop()


def test_unreachable_redis_is_reported_not_raised(unreachable_app: Flask) -> None:
    client = unreachable_app.test_client()
    before = scrape(client)
    text = scrape(client)
    assert value(text, "postbandit_redis_up", role="statistics") == 0
    assert value(text, "postbandit_redis_up", role="broker") == 0
    assert "postbandit_queue_depth{" not in text  # unknown, not a made-up 0
    assert samples(text, "postbandit_oldest_pending_batch_age_seconds") == []
    errors = value(text, "postbandit_redis_errors_total", operation="probe")
    assert errors - value(before, "postbandit_redis_errors_total", operation="probe") == 2
    assert client.get("/v1/recommendations?user_id=u").status_code == 503
    after = scrape(client)
    assert (
        value(after, "postbandit_recommendations_total", policy=POLICY, result="unavailable") >= 1
    )


def test_task_attempts_are_timed_and_failures_counted_by_task() -> None:
    celery = Celery("metered-test", set_as_current=False)

    @celery.task(name="postbandit.metered_probe", base=MeteredTask, bind=True)
    def probe(self: Any, action: str) -> str:
        if action == "retry":
            raise Retry("again")
        if action == "fail":
            raise ValueError("broken")
        return "ok"

    assert probe("ok") == "ok"
    with pytest.raises(Retry):
        probe("retry")
    with pytest.raises(ValueError, match="broken"):
        probe("fail")
    text = generate_latest(metrics.WORKER).decode()
    task = {"task": "metered_probe"}
    assert value(text, "postbandit_task_failures_total", **task, outcome="retried") == 1
    assert value(text, "postbandit_task_failures_total", **task, outcome="failed") == 1
    assert value(text, "postbandit_task_duration_seconds_count", **task) == 3


def test_the_worker_refuses_a_prometheus_client_already_in_multiprocess_mode(tmp: Path) -> None:
    """workers.main drops PROMETHEUS_MULTIPROC_DIR before prometheus-client is imported; if
    something imported it earlier, in multiprocess mode, the worker refuses to start."""
    code = "import prometheus_client, workers.main"
    env = {"PATH": os.environ["PATH"], "PROMETHEUS_MULTIPROC_DIR": str(tmp)}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 1
    assert "RuntimeError: prometheus-client was imported with PROMETHEUS_MULTIPROC" in run.stderr
    assert list(tmp.iterdir()) == []


def test_a_snapshot_timestamp_at_zero_is_not_exported() -> None:
    """0 is what prometheus-client writes before a process has loaded any snapshot."""
    registry = CollectorRegistry()
    stamp = Gauge("postbandit_snapshot_timestamp_seconds", "t", registry=registry)
    live = Gauge("postbandit_live_posts", "n", registry=registry)
    exposed = CollectorRegistry()
    exposed.register(metrics.Unset(registry))
    text = generate_latest(exposed).decode()
    assert samples(text, "postbandit_snapshot_timestamp_seconds") == []
    assert value(text, "postbandit_live_posts") == 0  # other gauges keep their 0
    stamp.set(1_700_000_000.5)
    live.set(3)
    text = generate_latest(exposed).decode()
    assert value(text, "postbandit_snapshot_timestamp_seconds") == 1_700_000_000.5


@pytest.mark.parametrize("variable", ["PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"])
def test_the_worker_entry_point_keeps_prometheus_client_out_of_multiprocess_mode(
    tmp: Path, variable: str
) -> None:
    code = ("import os, workers.main, prometheus_client.values as v\n"
            "assert v.ValueClass is v.MutexValue, v.ValueClass\n"
            f"assert {variable!r} not in os.environ\n")  # fmt: skip
    env = {"PATH": os.environ["PATH"], variable: str(tmp)}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert list(tmp.iterdir()) == []


def test_labels_give_the_librarys_children_once_resolved() -> None:
    registry = CollectorRegistry()
    counter = metrics.Counter("t_requests", "t", ["endpoint", "status"], registry=registry)
    histogram = metrics.Histogram(
        "t_seconds", "t", ["endpoint"], buckets=(0.1, 1.0), registry=registry
    )
    first = counter.labels("/a", "200")
    assert counter.labels("/a", "200") is first
    assert counter.labels(endpoint="/a", status="200") is first  # by name: the library's
    assert counter.labels("/a", "500") is not first
    first.inc()
    counter.labels("/a", "200").inc(2)
    histogram.labels("/a").observe(0.5)
    text = generate_latest(registry).decode()
    assert 't_requests_total{endpoint="/a",status="200"} 3.0' in text
    assert 't_requests_total{endpoint="/a",status="500"} 0.0' in text
    assert 't_seconds_bucket{endpoint="/a",le="1.0"} 1.0' in text
    with pytest.raises(ValueError, match="Incorrect label count"):
        counter.labels("/a")
    assert counter.labels(["/b"], "200") is counter.labels("['/b']", "200")  # not hashable


def test_every_metric_resolves_its_children_once() -> None:
    defined = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    assert metrics.RECOMMENDATIONS in defined and metrics.HTTP_LATENCY in defined
    assert all(isinstance(m, metrics._Children) for m in defined)
