"""The Celery application: every setting in one place (``celery_settings``), tested.

Events must never be lost once the API answered 202, nor counted twice:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its
  events were applied, so a worker killed mid-task leaves it to be delivered again;
* the Redis transport re-delivers unacknowledged messages after ``visibility_timeout``
  (``BANDIT_VISIBILITY_TIMEOUT``), and applying an event twice is a no-op (see app.storage);
* publishing retries briefly, then fails fast so the API can answer 503 instead of hanging.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.config import Settings

APPLY_EVENTS = "postbandit.apply_events"
QUEUE = "postbandit.events"


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for these settings (names as in Celery's settings reference)."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2.0,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
        },
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
        "worker_prefetch_multiplier": 4,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }  # fmt: skip


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for ``settings``; tasks are found in ``workers.tasks``."""
    celery = Celery("postbandit", set_as_current=False)
    celery.conf.update(celery_settings(settings))
    celery.conf.update(include=["workers.tasks"])
    celery.postbandit_settings = settings
    return celery
