"""gunicorn configuration for production (Procfile) and development (bin/run).

Its variables (``PORT``, ``BIND_HOST``, ``WEB_CONCURRENCY``, ``BANDIT_LOG_LEVEL``,
``PROMETHEUS_MULTIPROC_DIR``) are declared in ``core.settings.ServerSettings``. The master
validates them and the app's own settings before it forks, so that a value out of range stops
gunicorn at once with a message naming the variable, rather than every worker failing to boot.
``core.settings`` imports pydantic and ``bandits`` only: nothing here opens metric files.
"""

import shutil
from pathlib import Path
from typing import Any

from core.settings import ConfigError, ServerSettings, Settings

try:
    server_settings = ServerSettings.from_env()
    Settings.from_env(role="web")
except ConfigError as exc:
    raise SystemExit(f"gunicorn.conf.py: {exc}") from None

bind = server_settings.bind
workers = server_settings.web_concurrency
worker_class = "sync"
timeout = 30
graceful_timeout = 20
keepalive = 5
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
# The request line (method, path and query) may be up to gunicorn's maximum, 8190 bytes, so that
# long forums=/exclude= lists fit; longer lines get gunicorn's own 400 before the app sees them.
limit_request_line = 8190
# gunicorn's control socket (for gunicornc) has one default path per user, shared by every
# instance on the host, so a second instance (a test run, the benchmark) would take it over;
# nothing here uses gunicornc.
control_socket_disable = True


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
