"""The journal of accepted batches and its sweep, against a real Redis (statistics and broker)."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import pytest
import redis
from celery import Celery

from core.events import apply_batch
from core.queue import QUEUE, EventBatch, make_celery
from core.settings import Settings
from core.storage import Served, Storage, new_request_id
from core.storage.broker import oldest_waiting_task
from core.storage.keys import JOURNAL_SHARDS, journal_shard
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


def test_batches_spread_over_the_shards_and_are_swept_oldest_first(storage: Storage) -> None:
    now = time.time()
    ids = [f"{i:032x}" for i in range(64)]
    for age, batch_id in enumerate(ids):
        journal(storage, batch_id, since=now - 1000 + age, received_at=now)
    shards = [s for s, since in enumerate(storage.keys.journals)
              if storage.client.zcard(since[1])]  # fmt: skip
    assert len(shards) > JOURNAL_SHARDS // 2 and JOURNAL_SHARDS not in shards  # not the old one
    assert [i for i, _ in storage.journal.overdue(math.inf, 10)] == ids[:10]
    assert [i for i, _ in storage.journal.overdue(now - 1000 + 5, 100)] == ids[:5]
    assert storage.journal.oldest_since() == pytest.approx(now - 1000)
    storage.journal.forget(ids[0])
    assert storage.journal.oldest_since() == pytest.approx(now - 999)
    for batch_id in ids[1:]:
        storage.journal.forget(batch_id)
    assert storage.journal.is_empty() and storage.journal.oldest_since() is None


def legacy_journal(storage: Storage, batch_id: str, since: float) -> None:
    """A batch journalled as the releases before the shards did, under ``{pending}``."""
    args = json.dumps(["impression", [["r1", "p1"]], since])
    pipe = storage.client.pipeline(transaction=True)
    pipe.hset(storage.keys.legacy_pending, batch_id, args)
    pipe.zadd(storage.keys.legacy_pending_since, {batch_id: since})
    pipe.execute()


def test_batches_of_the_unsharded_journal_are_moved_into_the_shards_and_swept(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    now = time.time()
    legacy_journal(storage, "a" * 32, since=now - 900)  # lost by the broker before the upgrade
    legacy_journal(storage, "b" * 32, since=now - 1)  # may still be in flight
    assert storage.journal.oldest_since() == pytest.approx(now - 900)  # read before the sweep
    assert storage.journal.since("b" * 32) == pytest.approx(now - 1)
    assert sweep(celery, storage, broker, sweep_settings, now) == 1
    assert queued_ids(broker) == ["a" * 32]
    assert not storage.client.exists(storage.keys.legacy_pending, storage.keys.legacy_pending_since)
    batches = storage.keys.pending(journal_shard("b" * 32))
    assert storage.client.hexists(batches, "b" * 32)
    assert storage.journal.since("b" * 32) == pytest.approx(now - 1)  # its time kept
    assert storage.journal.since("a" * 32) == pytest.approx(now)  # handed over again
    for batch_id in ("a" * 32, "b" * 32):  # applied by a worker of this release
        storage.journal.forget(batch_id)
    assert storage.journal.is_empty()


def test_moving_a_batch_again_after_a_failure_keeps_one_copy(storage: Storage) -> None:
    """A move interrupted after the shard's write leaves the batch in both journals."""
    legacy_journal(storage, "a" * 32, since=10.0)
    journal(storage, "a" * 32, since=10.0, received_at=10.0)
    legacy_journal(storage, "c" * 32, since=11.0)
    storage.client.hdel(storage.keys.legacy_pending, "c" * 32)  # forgotten half-way
    assert storage.journal.adopt_legacy(100) == 2
    assert [i for i, _ in storage.journal.overdue(math.inf, 100)] == ["a" * 32]
    assert storage.journal.adopt_legacy(100) == 0
    storage.journal.forget("a" * 32)
    assert storage.journal.is_empty()


def test_an_old_journals_batch_applied_before_its_move_counts_once(
    storage: Storage, celery: Celery, broker: redis.Redis, sweep_settings: Settings
) -> None:
    """The upgrade's worst case: a worker of the new release applies a batch of the old
    journal (forgetting it from its shard, where it is not yet), so the sweep moves it and
    publishes it again; applied again, it counts nothing more."""
    now = time.time()
    storage.catalogue.put_post("p1", "f1", now, now + 3600, 60)
    served = Served(new_request_id("u1"), "u1", "explore", {"p1": "f1"})
    storage.serving.serve(served, WINDOW)
    batch = EventBatch("impression", [[served.request_id, "p1"]], now - 900)
    pipe = storage.client.pipeline(transaction=True)
    pipe.hset(storage.keys.legacy_pending, "a" * 32, batch.to_json())
    pipe.zadd(storage.keys.legacy_pending_since, {"a" * 32: now - 900})
    pipe.execute()
    applied = apply_batch(storage, *batch.args(), WINDOW, WINDOW)
    assert applied.results == {"counted": 1}
    storage.journal.forget("a" * 32)  # from its shard: the batch is still in the old journal
    assert sweep(celery, storage, broker, sweep_settings, now) == 1
    assert queued_ids(broker) == ["a" * 32]
    message = json.loads(broker.lrange(QUEUE, 0, 0)[0])
    again = EventBatch(*json.loads(base64.b64decode(message["body"]))[0])
    assert apply_batch(storage, *again.args(), WINDOW, WINDOW).results == {"duplicate": 1}
    storage.journal.forget("a" * 32)
    assert storage.journal.is_empty()
    post = storage.catalogue.get_post("p1")
    assert post is not None and post.impressions == 1
