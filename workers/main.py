"""Entry point of the worker process: ``celery -A workers.main worker``.

The app is built from the environment here, and only here, so that importing
``core.queue`` (as the web tier does to publish) reads nothing at import time.
"""

from core.queue import make_celery
from core.settings import ConfigError, Settings
from workers import monitoring, sweeper

try:
    settings = Settings.from_env(role="worker")
except ConfigError as exc:  # one line naming the variable, not Celery's "unable to load" trace
    raise SystemExit(f"worker: {exc}") from None
app = make_celery(settings)
monitoring.install(app)
sweeper.install(app)
