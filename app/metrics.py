"""Every Prometheus metric of postbandit, defined once, with bounded labels only.

Labels are drawn from small fixed sets (endpoint rule, method, status, policy, type, result,
task, operation): never a user id, post id or raw path. Under gunicorn the web tier runs in
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``); see gunicorn.conf.py.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HTTP_REQUESTS = Counter(
    "postbandit_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "postbandit_http_request_duration_seconds", "HTTP request latency",
    ["endpoint", "method"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
RECOMMENDATIONS = Counter("postbandit_recommendations_total", "Slates served", ["policy", "result"])
SLATE_ITEMS = Histogram(
    "postbandit_slate_items", "Posts per served slate", ["policy"],
    buckets=(0, 1, 2, 5, 10, 20, 50),
)  # fmt: skip
EVENTS_RECEIVED = Counter(
    "postbandit_events_received_total", "Events accepted for processing", ["type"]
)
EVENTS_APPLIED = Counter(
    "postbandit_events_applied_total", "Events processed by the workers, by outcome",
    ["type", "result"],
)  # fmt: skip
TASK_SECONDS = Histogram(
    "postbandit_task_duration_seconds", "Celery task run time", ["task"], buckets=LATENCY_BUCKETS
)
TASK_FAILURES = Counter("postbandit_task_failures_total", "Celery task failures", ["task"])
REDIS_ERRORS = Counter(
    "postbandit_redis_errors_total", "Redis errors caught at a boundary", ["operation"]
)
SNAPSHOT_SECONDS = Histogram(
    "postbandit_snapshot_refresh_seconds", "Time to refresh the statistics snapshot",
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
LIVE_POSTS = Gauge(
    "postbandit_live_posts", "Live candidate posts in the snapshot", multiprocess_mode="max"
)
LIVE_FORUMS = Gauge("postbandit_live_forums", "Forums in the snapshot", multiprocess_mode="max")


def render() -> Response:
    """The exposition of this process, or of all gunicorn workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time and count every request by its URL rule (bounded), method and status."""

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in METHODS else "OTHER"
        started = g.get("metrics_started", time.perf_counter())
        HTTP_LATENCY.labels(endpoint, method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
        return response

    app.add_url_rule("/metrics", "metrics", render)
