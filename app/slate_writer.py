"""Served slates written behind the responses (:class:`SlateWriter`).

A recommendation hands its slate (with its decision-log entry and experiment count) to this
process's writer and answers at once; one background thread (a greenlet under gunicorn's
gevent worker, which patches threading) writes what waits every
``BANDIT_SLATE_FLUSH_SECONDS``, or as soon as ``MAX_BATCH`` wait, in the non-transactional
batches of ``Serving.steps`` (a batch that fails partway is written again from the step that
failed, so a slate is not counted in its experiment again because another slate's write
failed). Workers wait for a slate not written yet
(core.events.SLATE_WAIT_SECONDS), so events posted right after the response still count.

What can be lost: on a Redis failure the writer keeps the slates and tries again with a
back-off, holding at most ``MAX_PENDING`` (beyond, the oldest are dropped, counted in
``postbandit_slates_dropped_total`` and logged); a stopped process (gunicorn's ``worker_exit``,
after SIGTERM) writes every slate it holds; a process killed with SIGKILL loses the slates it
holds (of its last flush interval, or all it kept while Redis failed), whose events then
count ``unknown_request``.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Sequence

from core import metrics
from core.storage.errors import REDIS_ERRORS
from core.storage.serving import ToServe, WriteStep

log = logging.getLogger(__name__)

MAX_BATCH = 256
MAX_PENDING = 10_000  # about 20 MB of slates and decision entries
# Waits after failed writes: the first, doubled with each failure, up to the last.
BACKOFF_SECONDS = (0.05, 5.0)


# A slate held, with how many of the writer's steps it has been through.
_Held = tuple[int, ToServe]


class SlateWriter:
    """The slates this process served and has not written yet, and the thread writing them
    with ``steps``, in turn (each raises a Redis error when nothing, or not all, was written;
    a slate goes through each step once it went through the ones before)."""

    def __init__(self, steps: Sequence[WriteStep], interval: float) -> None:
        self.steps = tuple(steps)
        self.interval = interval
        self._reset()

    def _reset(self) -> None:
        self._pending: collections.deque[_Held] = collections.deque()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: see flush()
        self._wake = threading.Event()
        self._stopping = False
        self._full = False  # slates were dropped as they came, since the last flush
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, slate: ToServe) -> None:
        """Hold ``slate`` until the next flush (started with this process's first slate)."""
        if self._pid != os.getpid():
            self._reset()  # forked: the parent's slates and thread are the parent's
        if self._thread is None:
            self._start()
        with self._lock:
            self._pending.append((0, slate))
            size = len(self._pending)
            if size > MAX_PENDING:  # Redis has been failing: the thread waits out a back-off
                self._pending.popleft()
        metrics.SLATES_PENDING.inc()
        if size > MAX_PENDING:
            self._dropped(1, f"more than {MAX_PENDING} slates wait to be written", self._full)
            self._full = True  # logged once until a flush succeeds, not once a request
        if size >= MAX_BATCH:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="slate-writer", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write every slate held now, ``MAX_BATCH`` at a time; how many were written. When it
        returns, every slate added before the call is written (a flush under way in the
        thread is waited for).

        Raises:
            redis.RedisError: Redis failed; the slates not written are held again (first).
        """
        with self._flushing:
            return self._flush()

    def _flush(self) -> int:
        written = 0
        while chunk := self._take():
            started = time.perf_counter()
            self._write(chunk)
            metrics.SLATE_FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.SLATES_WRITTEN.inc(len(chunk))
            metrics.SLATES_PENDING.dec(len(chunk))
            written += len(chunk)
        return written

    def _write(self, chunk: list[_Held]) -> None:
        """Take ``chunk`` through the steps each slate has not been through yet.

        Raises:
            redis.RedisError: a step failed; the chunk is held again, each slate with the
                steps it went through (the failed one not among them).
        """
        for step, write in enumerate(self.steps):
            todo = [slate for done, slate in chunk if done <= step]
            try:
                if todo:
                    write(todo)
            except REDIS_ERRORS:
                self._give_back([(max(done, step), slate) for done, slate in chunk])
                raise
            except Exception:
                self._dropped(len(chunk), "they could not be written")
                raise

    def _take(self) -> list[_Held]:
        with self._lock:
            count = min(MAX_BATCH, len(self._pending))
            return [self._pending.popleft() for _ in range(count)]

    def _give_back(self, chunk: list[_Held]) -> None:
        """Hold ``chunk`` again, oldest first; drop the oldest beyond ``MAX_PENDING``."""
        with self._lock:
            self._pending.extendleft(reversed(chunk))
            over = max(0, len(self._pending) - MAX_PENDING)
            for _ in range(over):
                self._pending.popleft()
        if over:
            self._dropped(over, f"more than {MAX_PENDING} slates wait to be written")

    def _dropped(self, count: int, why: str, quiet: bool = False) -> None:
        metrics.SLATES_DROPPED.inc(count)
        metrics.SLATES_PENDING.dec(count)
        if not quiet:
            log.error("dropped %d served slates (%s): their events count unknown_request",
                      count, why)  # fmt: skip

    def _run(self) -> None:
        delay = self.interval
        while not self._stopping:
            self._wake.wait(delay)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
                delay, self._full = self.interval, False
            except REDIS_ERRORS as exc:
                metrics.redis_failed(log, "remember_served", exc)
                first, last = BACKOFF_SECONDS
                delay = min(last, max(first, delay * 2))
            except Exception:  # a bug must not stop every later write of this process
                log.exception("the slate writer failed")

    def stop(self) -> None:
        """Stop the thread and write what is held (one try; what fails is dropped, counted)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            self.flush()
        except REDIS_ERRORS as exc:
            metrics.redis_failed(log, "remember_served", exc)
            with self._lock:
                lost = len(self._pending)
                self._pending.clear()
            self._dropped(lost, "Redis failed at shutdown")

    @property
    def pending(self) -> int:
        """How many slates wait to be written."""
        return len(self._pending)
