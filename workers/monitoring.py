"""Logs and metrics of the worker process: JSON lines on stdout and its own ``/metrics``.

Run the worker with ``celery --quiet`` (as the Procfile does): Celery prints its start-up
banner as plain text otherwise. Its one line on a warm shutdown, ``worker: Warm shutdown
(MainProcess)``, it writes straight to the standard output whatever the settings.

The worker serves :data:`core.metrics.WORKER` over HTTP on ``BANDIT_WORKER_METRICS_HOST:PORT``
from the moment it consumes (``worker_ready``) rather than writing into the web tier's
multiprocess directory: on a Procfile platform web and worker run on different hosts. Run one
worker process per host (or give each its own port); its pool is threads, so there is one
process to scrape. The port is taken at start-up (``worker_init``): a worker that cannot take it
exits, naming the variable.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import Celery, signals
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

from core import logs, metrics
from core.events import RESULTS
from core.settings import Settings
from workers.tasks import MeteredTask

log = logging.getLogger(__name__)

QUIET_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def install(celery: Celery) -> None:
    """Connect the worker's logging and metrics set-up to ``celery``'s signals."""
    settings: Settings = celery.postbandit_settings
    bound: list[WSGIServer] = []  # listening since worker_init
    serving: list[WSGIServer] = []  # and answering since worker_ready

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

    # The port is taken at start-up (worker_init, before the worker connects to the broker), so
    # that a worker whose metrics cannot be scraped refuses to start instead of running unseen.
    @signals.worker_init.connect(weak=False)
    def _bind(**_: Any) -> None:
        if settings.worker_metrics_port:
            bound.append(bind_metrics(settings))

    @signals.worker_ready.connect(weak=False)
    def _serve(**_: Any) -> None:
        tasks = [t.metric_name for t in celery.tasks.values() if isinstance(t, MeteredTask)]
        for server in bound:
            serve_metrics(server, settings, sorted(tasks))
            serving.append(server)

    @signals.worker_shutdown.connect(weak=False)
    def _stop(**_: Any) -> None:
        for server in serving:
            server.shutdown()  # waits for serve_forever to return: only for a server serving
        for server in bound:
            server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (the base class writes each one to stderr)."""


def bind_metrics(settings: Settings) -> WSGIServer:
    """The worker's /metrics server, listening on BANDIT_WORKER_METRICS_HOST:PORT and not yet
    serving (:func:`serve_metrics` starts it).

    Raises:
        SystemExit: the address cannot be taken (the port is in use, the host is not this
            machine's); the message names the variables.
    """
    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
        app = make_wsgi_app(metrics.WORKER)
        return make_server(host, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise SystemExit(
            f"BANDIT_WORKER_METRICS_PORT={port} (BANDIT_WORKER_METRICS_HOST={host}): the worker "
            f"cannot serve its metrics there ({exc}); free the port or choose another one "
            "(0 turns the worker's metrics off)"
        ) from None


def serve_metrics(server: WSGIServer, settings: Settings, tasks: list[str]) -> None:
    """Serve /metrics on ``server`` (a daemon thread), with its series (``tasks``) at zero."""
    disable_created_metrics()
    registry = metrics.WORKER
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    metrics.PROCESS_MEMORY.set_function(metrics.resident_memory)
    metrics.init_worker_labels(settings.policy, RESULTS, tasks)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    log.info("worker metrics on http://%s:%d/metrics", host, port)
