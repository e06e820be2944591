"""gunicorn configuration for production (Procfile) and development (bin/run).

Its variables (``PORT``, ``BIND_HOST``, ``WEB_CONCURRENCY``, ``BANDIT_LOG_LEVEL``,
``PROMETHEUS_MULTIPROC_DIR``) are declared in ``core.settings.ServerSettings``. The master
validates them and the app's own settings before it forks, so that a value out of range stops
gunicorn at once with a message naming the variable, rather than every worker failing to boot.
``core.settings`` imports pydantic and ``bandits`` only: nothing here opens metric files.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import gunicorn.util

from core.settings import ConfigError, ServerSettings, Settings

try:
    server_settings = ServerSettings.from_env()
    Settings.from_env(role="web")
except ConfigError as exc:
    raise SystemExit(f"gunicorn.conf.py: {exc}") from None

bind = server_settings.bind
workers = server_settings.web_concurrency
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
loglevel = server_settings.log_level.lower()
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
# The request line (method, path and query) may be up to gunicorn's maximum, 8190 bytes
# (app.schemas.MAX_REQUEST_LINE), so that forums=/exclude= lists of short ids fit; longer lists
# go in the body of POST /v1/recommendations. gunicorn refuses a longer line itself, before the
# app sees it: _json_error gives that answer the API's error shape.
limit_request_line = 8190
# gunicorn's control socket (for gunicornc) has one default path per user, shared by every
# instance on the host, so a second instance (a test run, the benchmark) would take it over;
# nothing here uses gunicornc.
control_socket_disable = True


def _json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own refusals (a request line over the limit, a malformed request) in the
    one error shape of the API (app/errors.py), not as an HTML page."""
    code, field, message = reason.lower().replace(" ", "_"), None, mesg
    if status_int == 414:
        field = "request_line"
        message = (
            f"request_line: longer than the limit of {limit_request_line} bytes; send long "
            "forums/exclude lists in the body of POST /v1/recommendations"
        )
    body = json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn has no hook for the answers it gives before a request reaches the app; every worker
# class writes them with this function (gunicorn.workers.base.Worker.handle_error), and the
# workers, forked from the master that reads this file, inherit the replacement.
gunicorn.util.write_error = _json_error


def on_starting(server: Any) -> None:
    """Start every run with an empty multiprocess metrics directory."""
    directory = server_settings.prometheus_multiproc_dir
    if not directory:
        return
    shutil.rmtree(directory, ignore_errors=True)
    Path(directory).mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop the live-gauge files of a dead worker so they do not haunt /metrics."""
    if server_settings.prometheus_multiproc_dir:
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


def worker_exit(server: Any, worker: Any) -> None:
    """Write the slates the worker served and still holds (app.slate_writer) as it exits."""
    from app import runtime

    try:
        runtime.stop(worker.wsgi)
    except Exception:
        worker.log.exception("could not write the served slates at exit")


def pre_request(worker: Any, req: Any) -> None:
    """Start the request's deadline (REQUEST_SECONDS) under gevent, cancelled in post_request.

    Only a gevent worker can interrupt a request where it waits, so only it gets one. The
    other classes (``bin/bench workers`` measures them through ``GUNICORN_CMD_ARGS``) have what
    gunicorn gives them: a sync worker busy for ``timeout`` seconds misses its heartbeat and
    the master kills it; a gthread worker's heartbeat comes from its main thread, so a thread
    held by a slow body is bounded by nothing but the client (gunicorn's ``timeout`` then only
    proves the process alive), and a Redis call by the Redis socket timeout the app sets.
    """
    if type(worker).__module__ != "gunicorn.workers.ggevent":
        return
    import gevent

    # Raised where the request's greenlet waits when time is up: a TimeoutError reading the body
    # becomes werkzeug's 400, in a Redis call the Redis timeout the app already degrades on.
    req.postbandit_deadline = gevent.Timeout(REQUEST_SECONDS, TimeoutError("request too slow"))
    req.postbandit_deadline.start()


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Cancel the request's deadline; under gevent, then yield to the worker's other
    greenlets before this connection's next request (``gevent.sleep(0)``).

    The response is written by then. The yield is there by measurement: with 8 keep-alive
    wrk connections on a bare endpoint, the p99 was 82-142 ms without it and 9-28 ms with it,
    at the same req/s (alternated runs, docs/benchmarks.md). Why a greenlet that waits on its
    socket for the next request waits so long now and then is not established; with the
    yield, the next request has usually arrived when the greenlet resumes, and it is read
    without a wait.
    """
    deadline = getattr(req, "postbandit_deadline", None)
    if deadline is None:
        return
    deadline.close()
    import gevent

    gevent.sleep(0)
