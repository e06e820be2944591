"""Entry point of the worker process: ``celery -A workers.main worker``.

The app is built from the environment here, and only here, so that importing
``workers.celery_app`` (as the web tier does to publish) reads nothing at import time.
"""

from app.config import Settings
from workers import monitoring, sweeper
from workers.celery_app import make_celery

app = make_celery(Settings.from_env(role="worker"))
monitoring.install(app)
sweeper.install(app)
