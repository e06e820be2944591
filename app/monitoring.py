"""The web tier's Prometheus exposure: every request timed and counted, and ``/metrics``.

The metrics themselves are defined in :mod:`core.metrics`, shared with the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from core.metrics import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    METHODS,
    PROCESS_MEMORY,
    WEB,
    Dependencies,
    DependencyCollector,
    Unset,
    init_web_labels,
    resident_memory,
)


def render(read_dependencies: Callable[[], Dependencies]) -> Response:
    """The exposition of this process, or of all gunicorn workers in multiprocess mode."""
    live = CollectorRegistry()
    live.register(DependencyCollector(read_dependencies))
    read_now = generate_latest(live)  # first: errors it counts are in this very scrape
    recorded = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        recorded.register(Unset(multiprocess.MultiProcessCollector(None)))
    else:
        recorded.register(Unset(WEB))
    return Response(generate_latest(recorded) + read_now, mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask, policy: str, read_dependencies: Callable[[], Dependencies]) -> None:
    """Time and count every request by its URL rule (bounded), method and status; /metrics."""
    disable_created_metrics()  # no ``*_created`` series: Prometheus has no use for them
    init_web_labels(policy)
    memory_sampled = 0.0

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        nonlocal memory_sampled
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in METHODS else "OTHER"
        started = g.get("metrics_started", time.perf_counter())
        HTTP_LATENCY.labels(endpoint, method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
        if started - memory_sampled >= 1.0:  # at most once a second per process
            memory_sampled = started
            PROCESS_MEMORY.set(resident_memory())
        return response

    app.add_url_rule("/metrics", "metrics", lambda: render(read_dependencies))
