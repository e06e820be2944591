"""Entry point of the worker process: ``celery -A workers.main worker``.

The app is built from the environment here, and only here, so that importing
``core.queue`` (as the web tier does to publish) reads nothing at import time.
"""

from core.queue import make_celery
from core.settings import Settings
from workers import monitoring, sweeper

app = make_celery(Settings.from_env(role="worker"))
monitoring.install(app)
sweeper.install(app)
