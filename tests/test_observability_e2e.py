"""Observability of the real processes: the worker's own /metrics, JSON logs without secrets,
and the web tier's multiprocess metrics surviving a dead gunicorn worker."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.queue import APPLY_EVENTS, make_celery
from core.settings import Settings
from devtools.redis_server import free_port
from tests.exposition import samples, value
from tests.processes import Proc, service_env, wait_for, wait_for_fresh_snapshots, web_and_worker

pytestmark = pytest.mark.e2e
ADMIN_TOKEN, APP_TOKEN = "obs-admin-token", "obs-app-token"
POLICY = "two_level_ts"


@dataclass
class Stack:
    base: str
    worker_metrics: str
    web: Proc
    worker: Proc
    env: dict[str, str]
    metrics_dir: Path  # the web tier's PROMETHEUS_MULTIPROC_DIR


@pytest.fixture
def stack(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    # Both processes get the web's PROMETHEUS_MULTIPROC_DIR, as a shared .env under a Procfile
    # runner gives it to them (start_web sets the same path for gunicorn).
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=ADMIN_TOKEN,
                      BANDIT_APP_TOKEN=APP_TOKEN, BANDIT_WORKER_METRICS_PORT=str(port),
                      BANDIT_WORKER_METRICS_HOST="127.0.0.1",
                      PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "web-metrics"))  # fmt: skip
    with web_and_worker(env, tmp_path) as (web, worker, base):
        yield Stack(base, f"http://127.0.0.1:{port}/metrics", web, worker, env,
                    Path(web.env["PROMETHEUS_MULTIPROC_DIR"]))  # fmt: skip


def get(url: str, **params: Any) -> requests.Response:
    response = requests.get(url, params=params, timeout=5)
    assert response.status_code == 200, response.text
    return response


def send(base: str, kind: str, rid: str, posts: list[str]) -> None:
    events = [{"request_id": rid, "post_id": p} for p in posts]
    response = requests.post(f"{base}/v1/{kind}", json={"events": events}, timeout=5,
                             headers={"Authorization": f"Bearer {APP_TOKEN}"})  # fmt: skip
    assert response.status_code == 202, response.text


def counted(stack: Stack, event_type: str) -> float:
    """The worker's count of events of ``event_type`` counted so far."""
    found = samples(get(stack.worker_metrics).text, "postbandit_events_applied_total",
                    type=event_type, result="counted")  # fmt: skip
    return sum(v for _, v in found)


def serve_and_report(stack: Stack) -> list[str]:
    """Register 4 posts, serve a slate of 3, report 3 impressions and 1 click; the slate."""
    for i in range(4):
        response = requests.put(f"{stack.base}/v1/posts/p{i}", json={"forum_id": "f"}, timeout=5,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
        assert response.status_code == 201
    wait_for_fresh_snapshots(stack.base, after=time.time())
    body = get(f"{stack.base}/v1/recommendations", user_id="alice", n=3).json()
    posts = [item["post_id"] for item in body["items"]]
    send(stack.base, "impressions", body["request_id"], posts)
    # The click after its impression is applied: a click applied first counts its impression
    # itself, and the impressions then find one duplicate (exact either way, but not these logs).
    wait_for(lambda: counted(stack, "impression") == 3, 15, "the impressions applied")
    send(stack.base, "clicks", body["request_id"], posts[:1])
    return posts


def test_the_worker_exports_its_own_metrics(stack: Stack) -> None:
    serve_and_report(stack)
    wait_for(lambda: 'result="counted",type="click"} 1.0' in get(stack.worker_metrics).text,
             15, "the click applied")  # fmt: skip
    text = get(stack.worker_metrics).text
    assert value(text, "postbandit_events_applied_total", type="impression", result="counted") == 3
    assert value(text, "postbandit_impressions_total", policy=POLICY) == 3
    assert value(text, "postbandit_clicks_total", policy=POLICY) == 1
    assert value(text, "postbandit_event_lag_seconds_count", type="impression") == 1
    assert 0 <= value(text, "postbandit_event_lag_seconds_sum", type="click") < 15
    assert value(text, "postbandit_task_duration_seconds_count", task="apply_events") == 2
    assert value(text, "postbandit_process_resident_memory_bytes") > 10_000_000
    assert value(text, "process_resident_memory_bytes") > 10_000_000
    assert "postbandit_live_posts" not in text and "postbandit_http_requests" not in text
    assert samples(text, "postbandit_decision_drain_lag_seconds") == []  # the drain is off
    assert "_created" not in text
    web = get(f"{stack.base}/metrics").text
    assert "postbandit_events_applied_total" not in web  # each tier exports its own

    # A batch the worker cannot process (the API never sends one) is counted as failed.
    celery = make_celery(Settings.from_mapping(stack.env, role="worker"))
    celery.send_task(APPLY_EVENTS, args=["view", [["r", "p"]], time.time()])
    wait_for(lambda: 'outcome="failed",task="apply_events"} 1.0' in get(stack.worker_metrics).text,
             15, "the failed task counted")  # fmt: skip


def test_a_worker_given_the_web_metrics_directory_keeps_out_of_it(stack: Stack) -> None:
    assert stack.worker.env["PROMETHEUS_MULTIPROC_DIR"] == str(stack.metrics_dir)
    serve_and_report(stack)
    wait_for(lambda: 'result="counted",type="click"} 1.0' in get(stack.worker_metrics).text,
             15, "the click applied")  # fmt: skip
    assert value(get(stack.worker_metrics).text, "postbandit_clicks_total", policy=POLICY) == 1
    assert list(stack.metrics_dir.glob(f"*_{stack.worker.pid}.db")) == []
    web = get(f"{stack.base}/metrics").text
    for name in ("postbandit_events_applied_total", "postbandit_clicks_total",
                 "postbandit_task_duration_seconds_count"):  # fmt: skip
        assert samples(web, name) == [], name
    gunicorn_workers = {str(c.pid) for c in psutil.Process(stack.web.pid).children()}
    pids = {sample.labels["pid"] for family in text_string_to_metric_families(web)
            for sample in family.samples if "pid" in sample.labels}  # fmt: skip
    assert pids and pids <= gunicorn_workers


def oldest_waiting(base: str) -> float | None:
    """The web's postbandit_oldest_pending_batch_age_seconds, None while it is absent."""
    found = samples(get(f"{base}/metrics").text, "postbandit_oldest_pending_batch_age_seconds")
    return found[0][1] if found else None


def test_a_batch_waiting_for_a_stopped_worker_ages_until_applied(stack: Stack) -> None:
    response = requests.put(f"{stack.base}/v1/posts/p", json={"forum_id": "f"}, timeout=5,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert response.status_code == 201
    wait_for_fresh_snapshots(stack.base, after=time.time())  # the slate holds p
    slate = get(f"{stack.base}/v1/recommendations", user_id="m").json()
    assert [item["post_id"] for item in slate["items"]] == ["p"]
    rid = slate["request_id"]
    assert oldest_waiting(stack.base) == 0  # nothing in the journal
    os.kill(stack.worker.pid, signal.SIGSTOP)  # alive (its port is open) but not consuming
    try:
        send(stack.base, "impressions", rid, ["p"])
        wait_for(lambda: (oldest_waiting(stack.base) or 0) > 1, 15, "the batch to age 1 s")
        first = oldest_waiting(stack.base)
        assert first is not None
        wait_for(lambda: (oldest_waiting(stack.base) or 0) > first, 15, "the age to grow")
    finally:
        os.kill(stack.worker.pid, signal.SIGCONT)
    wait_for(lambda: oldest_waiting(stack.base) == 0, 15, "the age back to 0 once applied")
    applied = get(stack.worker_metrics).text
    assert value(applied, "postbandit_events_applied_total", type="impression",
                 result="counted") == 1  # fmt: skip


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def test_logs_are_json_lines_without_secrets(stack: Stack) -> None:
    posts = serve_and_report(stack)
    wait_for(lambda: sum(x["msg"] == "events applied" for x in json_lines(stack.worker)) == 2,
             15, "two 'events applied' lines")  # fmt: skip
    [slate] = [x for x in json_lines(stack.web)
               if x["msg"] == "recommendation" and x["user_id"] == "alice"]  # fmt: skip
    assert slate["items"] == posts and slate["policy"] == POLICY and slate["degraded"] is False
    assert {"request_id", "latency_ms", "n"} <= set(slate)
    accepted = [(x["type"], x["events"]) for x in json_lines(stack.web)
                if x["msg"] == "events accepted"]  # fmt: skip
    assert accepted == [("impression", 3), ("click", 1)]
    applied = {x["type"]: x for x in json_lines(stack.worker) if x["msg"] == "events applied"}
    assert applied["impression"]["results"] == {"counted": 3}
    assert applied["click"]["events"] == 1 and applied["click"]["lag_seconds"] >= 0
    for proc in (stack.web, stack.worker):
        assert ADMIN_TOKEN not in proc.output() and APP_TOKEN not in proc.output()


# Celery writes this straight to its standard output, whatever the logging set-up.
CELERY_SHUTDOWN_NOTICE = "\nworker: Warm shutdown (MainProcess)\n"


def test_gunicorn_and_the_worker_write_nothing_but_json_lines(stack: Stack) -> None:
    serve_and_report(stack)
    wait_for(lambda: sum(x["msg"] == "events applied" for x in json_lines(stack.worker)) == 2,
             15, "two 'events applied' lines")  # fmt: skip
    stack.web.stop()
    stack.worker.stop()
    web = [json.loads(line) for line in stack.web.output().splitlines()]
    gunicorn = [x["msg"] for x in web if x["logger"] == "gunicorn.error"]
    assert gunicorn[0].startswith("Starting gunicorn") and gunicorn[-1] == "Shutting down: Master"
    assert sum(m.startswith("Booting worker with pid") for m in gunicorn) == 2
    output = stack.worker.output()
    assert output.count(CELERY_SHUTDOWN_NOTICE) == 1
    worker = [json.loads(line) for line in output.replace(CELERY_SHUTDOWN_NOTICE, "").splitlines()]
    assert any(x["logger"] == "celery.apps.worker" and x["msg"].endswith(" ready.") for x in worker)


def test_a_dead_gunicorn_worker_leaves_totals_and_takes_its_live_gauges(stack: Stack) -> None:
    serve_and_report(stack)

    def pids() -> set[str]:
        text = get(f"{stack.base}/metrics").text
        return {s[0]["pid"] for s in samples(text, "postbandit_process_resident_memory_bytes")}

    def recommendations() -> float:
        text = get(f"{stack.base}/metrics").text
        return sum(v for _, v in samples(text, "postbandit_recommendations_total"))

    for _ in range(20):  # fresh connections: both workers serve some
        get(f"{stack.base}/v1/recommendations", user_id="bob", n=1)
    wait_for(lambda: len(pids()) == 2, 10, "both gunicorn workers in /metrics")
    before_pids, before = pids(), recommendations()
    victim = sorted(before_pids)[0]
    assert (stack.metrics_dir / f"gauge_liveall_{victim}.db").exists()
    os.kill(int(victim), signal.SIGKILL)
    wait_for(lambda: len(pids() - before_pids) == 1, 20, "gunicorn to replace the worker")
    assert victim not in pids()
    assert not (stack.metrics_dir / f"gauge_liveall_{victim}.db").exists()
    assert (stack.metrics_dir / f"counter_{victim}.db").exists()
    assert recommendations() >= before  # the dead worker's counts are still in the totals
