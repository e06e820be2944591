"""The journal of accepted batches and its sweep, against a real Redis (statistics and broker)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
import redis
from celery import Celery

from core.queue import QUEUE, make_celery
from core.settings import Settings
from core.storage import Storage
from core.storage.broker import oldest_waiting_task
from workers.sweeper import sweep

VISIBILITY = 10
WINDOW = 3600
GRACE = 600


@pytest.fixture
def sweep_settings(config: dict[str, Any]) -> Settings:
    values = {**config, "BANDIT_VISIBILITY_TIMEOUT": str(VISIBILITY),
              "BANDIT_ATTRIBUTION_SECONDS": str(WINDOW),
              "BANDIT_EVENT_GRACE_SECONDS": str(GRACE)}  # fmt: skip
    return Settings.from_mapping(values, role="worker")


@pytest.fixture
def celery(sweep_settings: Settings) -> Celery:
    return make_celery(sweep_settings)


@pytest.fixture
def broker(broker_url: str) -> redis.Redis:
    return redis.Redis.from_url(broker_url)


def journal(storage: Storage, batch_id: str, since: float, received_at: float) -> None:
    args = ["impression", [["r1", "p1"]], received_at]
    storage.journal.add(batch_id, json.dumps(args), since)


def queued_ids(broker: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in broker.lrange(QUEUE, 0, -1)]


def test_an_overdue_batch_is_published_again_once(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    now = time.time()
    journal(storage, "a" * 32, since=now - VISIBILITY - 1, received_at=now - VISIBILITY - 1)
    journal(storage, "b" * 32, since=now - 1, received_at=now - 1)  # may still be in flight
    assert sweep(celery, storage, broker, sweep_settings, now) == 1
    assert queued_ids(broker) == ["a" * 32]
    assert storage.journal.since("a" * 32) == pytest.approx(now)
    assert sweep(celery, storage, broker, sweep_settings, now + 1) == 0
    assert len(storage.journal.overdue(math.inf, 100)) == 2


def test_batches_that_may_wait_in_the_queue_are_left_alone(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    now = time.time()
    for name, since in (("lost", now - 900), ("waiting", now - 600), ("later", now - 300)):
        journal(storage, name.ljust(32, "0"), since=since, received_at=since)
    celery.send_task("postbandit.apply_events", args=[], task_id="waiting".ljust(32, "0"))
    assert oldest_waiting_task(broker, QUEUE) == "waiting".ljust(32, "0")
    assert sweep(celery, storage, broker, sweep_settings, now) == 1
    assert queued_ids(broker) == ["lost".ljust(32, "0"), "waiting".ljust(32, "0")]


def test_a_head_of_queue_outside_the_journal_postpones_the_sweep(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    now = time.time()
    journal(storage, "a" * 32, since=now - 900, received_at=now - 900)
    celery.send_task("postbandit.apply_events", args=[], task_id="unknown")
    assert sweep(celery, storage, broker, sweep_settings, now) == 0


def test_batches_accepted_before_the_window_and_the_grace_are_dropped(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    now = time.time()
    journal(storage, "a" * 32, since=now - WINDOW, received_at=now - WINDOW - GRACE - 1)
    assert sweep(celery, storage, broker, sweep_settings, now) == 0
    assert storage.journal.overdue(math.inf, 100) == [] and broker.llen(QUEUE) == 0


def test_batches_accepted_within_the_window_and_the_grace_are_published_again(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    """Their events may still count: they are judged by when they were accepted."""
    now = time.time()
    journal(storage, "a" * 32, since=now - WINDOW, received_at=now - WINDOW - GRACE + 60)
    assert sweep(celery, storage, broker, sweep_settings, now) == 1
    assert queued_ids(broker) == ["a" * 32]


def test_one_worker_sweeps_at_a_time(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    now = time.time()
    journal(storage, "a" * 32, since=now - 900, received_at=now - 900)
    held = storage.journal.sweep_lock(seconds=5)
    assert held.acquire()
    assert sweep(celery, storage, broker, sweep_settings, now) == 0
    held.release()
    assert sweep(celery, storage, broker, sweep_settings, now) == 1


def test_forgetting_a_batch_removes_it_everywhere(storage: Storage) -> None:
    journal(storage, "a" * 32, since=1.0, received_at=1.0)
    storage.journal.forget("a" * 32)
    assert storage.journal.overdue(math.inf, 100) == []
    assert storage.journal.overdue(time.time(), 10) == []
    assert storage.journal.since("a" * 32) is None
