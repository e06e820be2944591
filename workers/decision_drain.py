"""The decision log drain: a thread of each worker moving the decision and outcome streams into
Parquet files under ``BANDIT_DECISION_LOG_URL`` (core.decision_files.drain; one worker at a
time holds the drain lock, the others find it taken and wait for the next round).
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery, signals

from core import metrics
from core.decision_files.drain import drain, oldest_waiting, sources
from core.decision_files.store import Store, StoreError
from core.settings import Settings
from core.storage import Storage
from core.storage.drain_cursors import LockLost
from core.storage.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
# What a failed drain raises: Redis, the store, or a lost lock; the next round tries again.
_DRAIN_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError, LockLost)


def interval(file_seconds: int) -> float:
    """Seconds between drain rounds: a fifth of a slice, 2 to 30 s."""
    return max(2.0, min(30.0, file_seconds / 5))


def install(celery: Celery) -> None:
    """Run drain rounds in a thread of the worker process from ``worker_ready`` on, when
    ``BANDIT_DECISION_LOG_URL`` is set.

    Raises:
        SystemExit: the URL names no filesystem fsspec can open (naming the variable).
    """
    settings: Settings = celery.postbandit_settings
    if not settings.decision_log_url:
        return
    try:
        store = Store(settings.decision_log_url)
    except StoreError as exc:
        raise SystemExit(f"worker: BANDIT_DECISION_LOG_URL: {exc}") from None
    stop = threading.Event()

    @signals.worker_ready.connect(weak=False)
    def _start(**_: object) -> None:
        threading.Thread(
            target=_run, args=(celery, settings, store, stop), name="decision-drain", daemon=True
        ).start()

    @signals.worker_shutdown.connect(weak=False)
    def _stop(**_: object) -> None:
        stop.set()


def _run(celery: Celery, settings: Settings, store: Store, stop: threading.Event) -> None:
    storage: Storage = celery.postbandit_storage.get()
    lag = Lag()
    while not stop.wait(interval(settings.decision_log_file_seconds)):
        _drain_round(storage, settings, store)
        lag.observe(storage)


def _drain_round(storage: Storage, settings: Settings, store: Store) -> None:
    try:
        now_ms = storage.drains.server_ms()
        drain(storage.drains, sources(storage.decisions), store,
              settings.decision_log_file_seconds * 1000, now_ms,
              lock_seconds=settings.decision_log_lock_seconds)  # fmt: skip
    except _DRAIN_ERRORS as exc:
        log.warning("decision log drain failed, retrying next round: %r", exc)
    except Exception:  # a store's own errors (object storage clients): never end the thread
        log.exception("decision log drain failed, retrying next round")


class Lag:
    """``postbandit_decision_drain_lag_seconds``: the age of each stream's oldest entry not
    yet drained, as last read from Redis (any worker reads it, draining or not). A read that
    fails keeps the last entry found, so the lag keeps growing while Redis is away; before
    the first read the gauge has no sample."""

    def __init__(self) -> None:
        self.oldest: dict[str, int | None] = {}

    def observe(self, storage: Storage) -> None:
        try:
            self.oldest = oldest_waiting(storage.drains, sources(storage.decisions))
        except REDIS_ERRORS as exc:
            log.warning("decision log drain lag not read: %r", exc)
        now_ms = time.time() * 1000
        for source, oldest in self.oldest.items():
            waited = 0.0 if oldest is None else max(0.0, now_ms - oldest) / 1000
            metrics.DRAIN_LAG.labels(source).set(waited)
