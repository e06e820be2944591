"""The journal sweeper: publishes again the accepted batches that no worker has applied.

The Redis broker can lose a message: kombu pops it (BRPOP) before it records it as
unacknowledged, and a worker killed in between takes it along. Every batch answered 202 is also
in the journal (``P:{pending:K}:batches``, see core.storage) until a worker applied it, so each
worker runs this sweep in a thread: a batch handed to the broker longer ago than the visibility
timeout is published again under the same id (applying it twice is a no-op), unless it may
still be waiting in the queue: only batches handed over before the message at the head of the
queue are taken, so a backlog is never duplicated. A batch accepted longer ago than the
attribution window plus the grace (``Settings.event_keep_seconds``) is dropped instead: every
slate its events name was served before it was accepted, so none of them can count any more.

One lock (``P:{pending}:lock``) covers every shard of the journal: the cutoff is one for all
of them (the head of the one queue), a sweep reads the oldest batches of all shards at once,
and the lock is taken once a sweep, not once an event, so it is no hot key. It keeps the name
of the releases before the shards, so that their workers and these never sweep at once during
a rolling upgrade. A sweep first moves the batches of their journal into the shards.

The same thread forgets, every minute, the posts whose attribution window closed after they
expired (:func:`prune`), so the per-forum keys hold recent posts only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis
from celery import Celery, signals
from kombu.exceptions import OperationalError

from core import clients
from core.queue import QUEUE, EventBatch, publish, restore_interval
from core.settings import Settings
from core.storage import Storage
from core.storage.broker import oldest_waiting_task
from core.storage.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
# What a failed sweep raises: Redis or the broker; the next round tries again.
_SWEEP_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OperationalError)

BATCHES_PER_SWEEP = 500
PRUNE_EVERY_SECONDS = 60.0


def cutoff(storage: Storage, broker: redis.Redis, settings: Settings, now: float) -> float | None:
    """Batches handed to the broker before this time are neither waiting in the queue nor
    recently delivered; None when that cannot be told now."""
    head = oldest_waiting_task(broker, QUEUE)
    if head is None:
        return now - settings.visibility_timeout
    since = storage.journal.since(head)
    return None if since is None else min(since, now - settings.visibility_timeout)


def sweep(
    celery: Celery, storage: Storage, broker: redis.Redis, settings: Settings, now: float
) -> int:
    """Publish the overdue batches of the journal again; how many were published.

    Raises:
        redis.RedisError, kombu.exceptions.OperationalError: Redis or the broker failed.
    """
    lock = storage.journal.sweep_lock(seconds=60)
    if not lock.acquire():
        return 0  # another worker is sweeping
    try:
        if moved := storage.journal.adopt_legacy(BATCHES_PER_SWEEP):
            log.warning("moved %d event batches of the unsharded journal into its shards", moved)
        before = cutoff(storage, broker, settings, now)
        if before is None:
            return 0
        published = 0
        for batch_id, payload in storage.journal.overdue(before, BATCHES_PER_SWEEP):
            batch = _batch(batch_id, payload)
            if batch is None or batch.received_at < now - settings.event_keep_seconds:
                storage.journal.forget(batch_id)
                continue
            publish(celery, batch_id, batch)
            storage.journal.requeued(batch_id, now)
            published += 1
        if published:
            log.warning("published %d overdue event batches again", published)
        return published
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # expired meanwhile
            lock.release()


def _batch(batch_id: str, payload: str | None) -> EventBatch | None:
    """The journalled batch, or None when it was forgotten meanwhile or cannot be read."""
    if payload is None:
        return None
    try:
        return EventBatch.from_json(payload)
    except ValueError as exc:
        log.error("dropping unreadable journal entry %s: %s", batch_id, exc)
        return None


def prune(storage: Storage, settings: Settings, now: float) -> int:
    """Forget the posts whose attribution window and grace have passed since they expired or
    were withdrawn (no event can count for them any more), in the forums' statistics and in the
    counts of the experiments on record (the last 100); how many were forgotten.

    Raises:
        redis.RedisError: Redis failed.
    """
    variants = experiment_variants(storage)
    pruned = storage.counting.prune_expired(now - settings.event_keep_seconds, experiments=variants)
    if pruned:
        log.info("forgot %d expired posts", pruned)
    return pruned


def experiment_variants(storage: Storage) -> dict[str, list[str]]:
    """The variant names of each experiment on record (the last 100), whose per-variant post
    counts pruning cleans. A record that cannot be read is logged and left out: its counts
    keep their posts until they expire, and the sweep goes on.

    Raises:
        redis.RedisError: Redis failed.
    """
    try:
        records = storage.experiments.history()
    except (ValueError, KeyError) as exc:  # a definition that is not JSON, a field missing
        log.error("experiment records unreadable, their post counts are left to expire: %r", exc)
        return {}
    found = {}
    for record in records:
        try:
            found[record.experiment_id] = [str(v["name"]) for v in record.definition["variants"]]
        except (KeyError, TypeError) as exc:
            log.error("experiment %s: no variant names in its definition: %r",
                      record.experiment_id, exc)  # fmt: skip
    return found


def install(celery: Celery) -> None:
    """Run :func:`sweep` in a thread of the worker process, from ``worker_ready`` on, every
    :func:`~core.queue.restore_interval` seconds."""
    settings: Settings = celery.postbandit_settings
    stop = threading.Event()

    @signals.worker_ready.connect(weak=False)
    def _start(**_: object) -> None:
        thread = threading.Thread(
            target=_run, args=(celery, settings, stop), name="journal-sweeper", daemon=True
        )
        thread.start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop(**_: object) -> None:
        stop.set()


def _run(celery: Celery, settings: Settings, stop: threading.Event) -> None:
    storage: Storage = celery.postbandit_storage.get()
    broker = clients.broker(settings, "worker")
    pruned_at = 0.0
    while not stop.wait(restore_interval(settings.visibility_timeout)):
        now = time.time()
        try:
            sweep(celery, storage, broker, settings, now)
            if now - pruned_at >= PRUNE_EVERY_SECONDS:
                prune(storage, settings, now)
                pruned_at = now
        except _SWEEP_ERRORS as exc:
            log.warning("journal sweep failed: %s", exc)
