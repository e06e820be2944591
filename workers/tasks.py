"""Celery tasks: thin, idempotent, timed and counted by task name."""

from __future__ import annotations

import logging
import time

import redis
from celery import Task, shared_task

from app import metrics
from app.config import Settings
from app.events import apply_batch
from app.storage import Storage

log = logging.getLogger(__name__)

_storage: dict[int, Storage] = {}


def storage_for(settings: Settings) -> Storage:
    """One Redis connection pool per worker process, created on first use (after fork)."""
    import os

    pid = os.getpid()
    if pid not in _storage:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        _storage.clear()
        _storage[pid] = Storage(client, settings.key_prefix)
    return _storage[pid]


@shared_task(
    name="postbandit.apply_events", bind=True, acks_late=True,
    autoretry_for=(redis.RedisError,), retry_backoff=True, retry_backoff_max=30,
    max_retries=None,
)  # fmt: skip
def apply_events(
    self: Task, event_type: str, events: list[list[str]], received_at: float
) -> dict[str, int]:
    """Apply a batch of ``[request_id, post_id]`` events of ``event_type``.

    Redis errors retry the task (with back-off, without limit): an accepted event is never
    dropped, and re-applying the ones already counted is a no-op.
    """
    settings: Settings = self.app.postbandit_settings
    started = time.perf_counter()
    try:
        outcome = apply_batch(
            storage_for(settings),
            event_type,
            events,
            time.time(),
            settings.attribution_seconds,
            settings.reclick_seconds,
        )
    except redis.RedisError:
        metrics.TASK_FAILURES.labels(task="apply_events").inc()
        metrics.REDIS_ERRORS.labels(operation="apply_events").inc()
        raise
    finally:
        metrics.TASK_SECONDS.labels(task="apply_events").observe(time.perf_counter() - started)
    for result, count in outcome.results.items():
        metrics.EVENTS_APPLIED.labels(type=event_type, result=result).inc(count)
    log.info("applied %s batch", event_type, extra={"results": dict(outcome.results)})
    return dict(outcome.results)
