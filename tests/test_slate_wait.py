"""Events that reach a worker before their slate is written (web processes write slates behind
their responses): they wait for it, as a retry of their task, for core.events.SLATE_WAIT_SECONDS,
and are never counted twice nor lost. Against a real Redis and a real Celery worker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient

from core.events import SLATE_WAIT_SECONDS, apply_batch
from core.queue import EventBatch, make_celery, publish
from core.settings import Settings
from core.storage import Served, Storage, new_request_id, request_time
from core.storage.keys import journal_shard
from core.storage.request_ids import never_written
from tests.processes import drained, service_env, start_worker, stop_all, wait_for

WINDOW = 3600


def slate(user: str, at: float | None = None) -> Served:
    return Served(new_request_id(user, at), user, "two_level_ts", {"p1": "f1", "p2": "f1"})


def put_posts(storage: Storage, now: float) -> None:
    for post in ("p1", "p2"):
        storage.catalogue.put_post(post, "f1", now, now + WINDOW, retention=60)


def test_an_event_of_a_young_request_id_waits_for_its_slate_and_an_old_one_does_not(
    storage: Storage,
) -> None:
    now = time.time()
    put_posts(storage, now)
    served, young = slate("u1"), slate("u2")
    old = slate("u3", now - SLATE_WAIT_SECONDS - 1)  # within the attribution window still
    ahead = slate("u4", now + SLATE_WAIT_SECONDS + 1)  # a web clock far ahead: no wait
    storage.serving.serve(served, WINDOW)
    events = [[served.request_id, "p1"], [young.request_id, "p1"], [old.request_id, "p1"],
              ["not-issued", "p1"], [ahead.request_id, "p1"]]  # fmt: skip
    outcome = apply_batch(storage, "impression", events, now, WINDOW, WINDOW,
                          wait=SLATE_WAIT_SECONDS)  # fmt: skip
    assert outcome.results == {"counted": 1, "unknown_request": 3}
    assert outcome.waiting == [[young.request_id, "p1"]]
    without = apply_batch(storage, "impression", events, now, WINDOW, WINDOW)  # no wait
    assert without.results == {"duplicate": 1, "unknown_request": 4} and not without.waiting
    storage.serving.serve(young, WINDOW)
    again = apply_batch(storage, "impression", outcome.waiting, now + 1, WINDOW, WINDOW,
                        wait=SLATE_WAIT_SECONDS)  # fmt: skip
    assert again.results == {"counted": 1} and not again.waiting
    record = storage.catalogue.get_post("p1", now)
    assert record is not None and record.impressions == 2


def test_an_event_of_a_request_id_ahead_of_the_clock_waits_no_longer_than_after_acceptance(
    storage: Storage,
) -> None:
    # A request id that a client made up, or from a web host whose clock runs ahead: within
    # the bound of the worker's clock still, 31 s after it was accepted, it must not wait.
    now = time.time()
    put_posts(storage, now)
    forged = slate("u1", now + SLATE_WAIT_SECONDS - 5)
    events = [[forged.request_id, "p1"]]
    fresh = apply_batch(storage, "impression", events, now, WINDOW, WINDOW,
                        accepted_at=now - 1, wait=SLATE_WAIT_SECONDS)  # fmt: skip
    assert fresh.waiting == events and not fresh.results
    accepted = now - SLATE_WAIT_SECONDS - 1
    late = apply_batch(storage, "impression", events, now, WINDOW, WINDOW,
                       accepted_at=accepted, wait=SLATE_WAIT_SECONDS)  # fmt: skip
    assert late.results == {"unknown_request": 1} and not late.waiting


def test_an_event_of_a_slate_that_is_never_written_does_not_wait(
    storage: Storage, client: FlaskClient
) -> None:
    """A slate served degraded or empty is never written, and its request id says so: its
    events count unknown_request at once, while a remembered slate's id never says so."""
    now = time.time()
    put_posts(storage, now)
    unwritten = new_request_id("u1", now, written=False)
    ids = [new_request_id("u1", now) for _ in range(2_000)]
    assert never_written(unwritten) and not any(never_written(i) for i in ids)
    assert request_time(unwritten) == request_time(ids[0]) and len(unwritten) == len(ids[0])
    outcome = apply_batch(storage, "impression", [[unwritten, "p1"], [ids[0], "p1"]], now,
                          WINDOW, WINDOW, wait=SLATE_WAIT_SECONDS)  # fmt: skip
    assert outcome.results == {"unknown_request": 1} and outcome.waiting == [[ids[0], "p1"]]
    empty = client.get("/v1/recommendations", query_string={"user_id": "u2", "forums": "none"})
    assert empty.status_code == 200 and empty.json["items"] == []
    assert never_written(empty.json["request_id"])
    full = client.get("/v1/recommendations", query_string={"user_id": "u2"})
    assert full.json["items"] and not never_written(full.json["request_id"])


def journalled(storage: Storage, batch_id: str) -> Any:
    payload = storage.client.hget(storage.keys.pending(journal_shard(batch_id)), batch_id)
    return None if payload is None else json.loads(payload)


def test_a_worker_applies_the_rest_and_retries_only_the_waiting_events_once_each(
    storage: Storage, rclient: redis.Redis, redis_url: str, broker_url: str, tmp_path: Path,
    config: dict[str, Any],
) -> None:  # fmt: skip
    now = time.time()
    put_posts(storage, now)
    served, late = slate("u1"), slate("u2")
    storage.serving.serve(served, WINDOW)
    celery = make_celery(Settings.from_mapping(config, role="web"))
    batch = EventBatch("impression", [[served.request_id, "p1"], [late.request_id, "p1"],
                                      [late.request_id, "p2"]], now)  # fmt: skip
    broker = redis.Redis.from_url(broker_url)
    worker = start_worker(service_env(redis_url, broker_url, tmp_path), tmp_path)
    try:
        storage.journal.add("b" * 32, batch.to_json(), now)
        publish(celery, "b" * 32, batch)
        # The served event is counted, and the journal holds only what waits.
        waiting = [[late.request_id, "p1"], [late.request_id, "p2"]]
        wait_for(lambda: journalled(storage, "b" * 32) == ["impression", waiting, now], 30,
                 "the journal to hold the waiting events only")  # fmt: skip
        assert impressions(storage, now) == (1, 0)
        storage.serving.serve(late, WINDOW)  # written late, as a web process's writer does
        wait_for(lambda: drained(rclient, broker), 30, "the retried events to be applied")
        assert impressions(storage, now) == (2, 1)
        storage.journal.add("b" * 32, batch.to_json(), time.time())
        publish(celery, "b" * 32, batch)  # a replay of the whole batch counts nothing again
        wait_for(lambda: drained(rclient, broker), 30, "the replay to be applied")
        assert impressions(storage, now) == (2, 1)
    finally:
        stop_all([worker])
        broker.close()
    assert '"unknown_request"' not in worker.output()


def impressions(storage: Storage, now: float) -> tuple[int, int]:
    posts = [storage.catalogue.get_post(p, now) for p in ("p1", "p2")]
    return tuple(0 if p is None else p.impressions for p in posts)  # type: ignore[return-value]
