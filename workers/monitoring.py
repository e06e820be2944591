"""Logs and metrics of the worker process: JSON lines on stdout and its own ``/metrics``.

Run the worker with ``celery --quiet`` (as the Procfile does): Celery prints its start-up
banner as plain text otherwise. Its one line on a warm shutdown, ``worker: Warm shutdown
(MainProcess)``, it writes straight to the standard output whatever the settings.

The worker serves :data:`core.metrics.WORKER` over HTTP on ``BANDIT_WORKER_METRICS_HOST:PORT``
from the moment it consumes (``worker_ready``) rather than writing into the web tier's
multiprocess directory: on a Procfile platform web and worker run on different hosts. Run one
worker process per host (or give each its own port); its pool is threads, so there is one
process to scrape.
"""

from __future__ import annotations

import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import Celery, signals
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from core import logs, metrics
from core.events import RESULTS
from core.settings import Settings
from workers.tasks import MeteredTask

log = logging.getLogger(__name__)

QUIET_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def install(celery: Celery) -> None:
    """Connect the worker's logging and metrics set-up to ``celery``'s signals."""
    settings: Settings = celery.postbandit_settings
    servers: list[WSGIServer] = []

    # celeryd_init is the worker's first signal: Celery warns (running as root) before it sends
    # setup_logging, and a receiver of setup_logging keeps Celery's own log set-up out.
    @signals.celeryd_init.connect(weak=False)
    @signals.setup_logging.connect(weak=False)
    def _logging(**_: Any) -> None:
        logs.configure(settings.log_level)
        logging.captureWarnings(True)
        if logging.getLogger().level > logging.DEBUG:
            # Celery logs each task received and succeeded, with its arguments, at INFO: our
            # one line per batch ("events applied") carries the counts instead.
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)

    @signals.worker_ready.connect(weak=False)
    def _serve(**_: Any) -> None:
        if settings.worker_metrics_port:
            tasks = [t.metric_name for t in celery.tasks.values() if isinstance(t, MeteredTask)]
            servers.append(serve_metrics(settings, sorted(tasks)))

    @signals.worker_shutdown.connect(weak=False)
    def _stop(**_: Any) -> None:
        for server in servers:
            server.shutdown()


def serve_metrics(settings: Settings, tasks: list[str]) -> WSGIServer:
    """Start the worker's /metrics server (a daemon thread) and its series (``tasks``) at zero.

    Raises:
        OSError: the port is taken (Celery logs it; the worker keeps consuming).
    """
    disable_created_metrics()
    registry = metrics.WORKER
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    metrics.PROCESS_MEMORY.set_function(metrics.resident_memory)
    metrics.init_worker_labels(settings.policy, RESULTS, tasks)
    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    server, _ = start_http_server(port, host, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return server
