"""gunicorn configuration for production (Procfile) and development (bin/run).

Environment: ``PORT`` (default 8000), ``BIND_HOST`` (default 0.0.0.0, as Procfile platforms
expect), ``WEB_CONCURRENCY`` (worker processes, default 2), ``PROMETHEUS_MULTIPROC_DIR``
(metrics of all workers; required when more than one worker runs).
"""

import os
import shutil
from pathlib import Path
from typing import Any

bind = f"{os.environ.get('BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Slow clients: a sync worker gives its whole process to one connection, so a few clients that
# send their request slowly (a bad mobile link, or on purpose) would hold every worker. A gevent
# worker serves each connection in a greenlet, up to worker_connections at once, so a slow one
# costs a little memory and no worker. The app is gevent-safe: gunicorn patches the standard
# library before it imports the app, so Redis, the broker and the snapshot refresh thread
# yield on I/O; numpy work holds the process as it would hold the GIL.
worker_class = "gevent"
worker_connections = 1000
timeout = 30
graceful_timeout = 20
# Also the time a client has to send a request's line and headers, from the connection (or the
# previous response) on: gunicorn's gevent worker reads them under a timeout of keepalive
# seconds. Must stay > 0: with 0 gunicorn reads headers with no time limit at all.
keepalive = 10
# The time from a request's headers to the end of its response (the body read above all): a
# client still sending its body then gets a 400 and is cut off. 20 s lets a body of the largest
# size (512 KiB) through a link of about 210 kbit/s, an event batch of 10 KiB through 4 kbit/s.
REQUEST_SECONDS = 20.0
accesslog = None  # the app logs each recommendation and event batch itself
loglevel = os.environ.get("BANDIT_LOG_LEVEL", "info").lower()
# gunicorn's own messages (start, workers booting and exiting, signals, errors) as JSON lines on
# stderr, in the format of the app's lines on stdout. core.logs imports only the standard
# library: the master must not import the app (see core.logs).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"],
                                   "propagate": False}},
}  # fmt: skip
# The request line (method, path and query) may be up to gunicorn's maximum, 8190 bytes, so that
# long forums=/exclude= lists fit; longer lines get gunicorn's own 400 before the app sees them.
limit_request_line = 8190
# gunicorn's control socket (for gunicornc) has one default path per user, shared by every
# instance on the host, so a second instance (a test run, the benchmark) would take it over;
# nothing here uses gunicornc.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Start every run with an empty multiprocess metrics directory."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        if workers > 1:
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR must be set when WEB_CONCURRENCY > 1")
        return
    shutil.rmtree(directory, ignore_errors=True)
    Path(directory).mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop the live-gauge files of a dead worker so they do not haunt /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Load the worker's statistics snapshot before it takes its first request: from Redis,
    else the last good one on disk, so that no worker answers 503 while a sibling serves."""
    from app import runtime  # in the worker, after the fork: the master never imports the app

    try:
        runtime.start(worker.wsgi)
    except Exception:  # a worker that cannot boot is no better; its first request tries again
        worker.log.exception("could not load the first snapshot")


def pre_request(worker: Any, req: Any) -> None:
    """Start the request's deadline (REQUEST_SECONDS), cancelled in post_request."""
    import gevent

    # Raised where the request's greenlet waits when time is up: a TimeoutError reading the body
    # becomes werkzeug's 400, in a Redis call the Redis timeout the app already degrades on.
    req.postbandit_deadline = gevent.Timeout(REQUEST_SECONDS, TimeoutError("request too slow"))
    req.postbandit_deadline.start()


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    deadline = getattr(req, "postbandit_deadline", None)
    if deadline is not None:
        deadline.close()
