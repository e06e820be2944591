"""The Celery application: every setting in one place (``celery_settings``), tested.

Events must never be lost once the API answered 202, nor counted twice:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its
  events were applied, so a worker killed mid-task leaves it to be delivered again;
* the Redis transport re-delivers unacknowledged messages after ``visibility_timeout``
  (``BANDIT_VISIBILITY_TIMEOUT``): every worker sweeps for them at start-up and then every
  :func:`restore_interval` seconds, and applying an event twice is a no-op (see core.storage);
* publishing retries once, with the web tier's broker socket timeouts at
  ``BANDIT_PUBLISH_TIMEOUT``, so the API answers 503 within a few seconds instead of hanging.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from core import clients, kombu_patch
from core.process import PerProcess
from core.settings import ConfigError, Settings

APPLY_EVENTS = "postbandit.apply_events"
QUEUE = "postbandit.events"
WORKER_BROKER_TIMEOUT = 2.0


def restore_interval(visibility_timeout: int) -> int:
    """Seconds between a worker's sweeps for unacknowledged messages past their visibility
    timeout: a fifth of it, 1 to 10 s (a sweep is one ZRANGE under a mutex)."""
    return max(1, min(10, visibility_timeout // 5))


def celery_settings(settings: Settings, role: str = "worker") -> dict[str, Any]:
    """The Celery configuration for these settings (names as in Celery's settings reference).

    ``role`` is ``worker`` or ``web``; the web tier only publishes, with broker socket timeouts
    of ``BANDIT_PUBLISH_TIMEOUT`` so that a hung broker costs an event POST seconds, not minutes.
    """
    timeout = settings.publish_timeout if role == "web" else WORKER_BROKER_TIMEOUT
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # A worker retries the broker for as long as it is down (Celery's default gives up after
        # 100 attempts, about 45 minutes, and exits); messages wait in Redis meanwhile.
        "broker_connection_max_retries": None,
        # Tasks running when the broker connection drops finish and are acknowledged later, or
        # are delivered again after the visibility timeout: both are safe, as application is
        # idempotent. Explicit because Celery 6 changes the default.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_timeout": timeout,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": restore_interval(settings.visibility_timeout),
            "unacked_restore_throttle": 1,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **sentinel_options(settings, timeout),
        },
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
        },
        "worker_prefetch_multiplier": 4,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }  # fmt: skip


def sentinel_options(settings: Settings, timeout: float) -> dict[str, Any]:
    """kombu's Sentinel transport options: the master's name, and the broker's socket timeouts
    for the sentinels too (none for a plain Redis broker)."""
    if not settings.broker_master_name:
        return {}
    return {
        "master_name": settings.broker_master_name,
        "sentinel_kwargs": {"socket_timeout": timeout, "socket_connect_timeout": timeout},
    }


def check_broker(client: redis.Redis) -> None:
    """Refuse a broker that is a Redis Cluster node (Celery's Redis transport would fail on
    the first key of another slot). An unreachable broker passes: the process starts and
    waits for it, as in any broker outage.

    Raises:
        ConfigError: naming ``CELERY_BROKER_URL``.
    """
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.RedisError:
        return
    if enabled:
        raise ConfigError(
            "CELERY_BROKER_URL must not name a Redis Cluster node: Celery's Redis transport has "
            "no cluster support; use a separate Redis or a Sentinel-managed one"
        )


def make_celery(settings: Settings, role: str = "worker") -> Celery:
    """A Celery app configured for ``settings``; tasks are found in ``workers.tasks``.

    Raises:
        ConfigError: the broker answers as a Redis Cluster node (:func:`check_broker`).
    """
    probe = clients.broker_probe(settings)
    try:
        check_broker(probe)
    finally:
        probe.close()
    kombu_patch.apply()
    celery = Celery("postbandit", set_as_current=False)
    celery.conf.update(celery_settings(settings, role))
    celery.postbandit_settings = settings
    if role == "worker":
        celery.conf.update(include=["workers.tasks"])
        # The worker's storage: one connection pool per process, made after fork.
        celery.postbandit_storage = PerProcess(lambda: clients.statistics(settings, "worker"))
    return celery


@dataclass(frozen=True)
class EventBatch:
    """An accepted batch of ``[request_id, post_id]`` events of one type, as the task takes it
    (its positional arguments) and as the journal keeps it (those arguments as JSON)."""

    event_type: str
    events: list[list[str]]
    received_at: float

    def args(self) -> list[Any]:
        return [self.event_type, self.events, self.received_at]

    def to_json(self) -> str:
        return json.dumps(self.args())

    @classmethod
    def from_json(cls, payload: str) -> EventBatch:
        """Raises: ValueError: not a journalled batch."""
        try:
            event_type, events, received_at = json.loads(payload)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an event batch: {payload[:80]!r}") from exc
        return cls(str(event_type), events, float(received_at))


def publish(celery: Celery, batch_id: str, batch: EventBatch) -> None:
    """Hand ``batch`` to the broker as the task ``batch_id`` (the same id every time).

    Raises:
        kombu.exceptions.OperationalError, redis.RedisError: the broker did not take it.
    """
    # A short argsrepr: Celery would otherwise repr the whole batch into the message headers,
    # a fifth of an event POST's CPU time.
    argsrepr = f"({batch.event_type!r}, <{len(batch.events)} events>, {batch.received_at})"
    celery.send_task(
        APPLY_EVENTS, args=batch.args(), task_id=batch_id, argsrepr=argsrepr, kwargsrepr="{}"
    )
