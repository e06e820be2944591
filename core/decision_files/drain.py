"""Draining the decision and outcome streams into files, one closed time slice at a time.

Each stream has a cursor in Redis: the end of the last slice written. A slice [start, end) of
stream ids is drained once the Redis clock (the clock of the ids) has passed its end by
``CLOSE_MARGIN_MS``, so no entry can be added to it later; its entries go to the one file named
after the slice (core.decision_files.store), and only then does the cursor move, in a
transaction that checks that this drainer still holds the drain lock. So:

* a drainer killed before the cursor moved leaves the slice to the next one, which writes the
  same file again (or finds it whole and keeps it): no slate is written twice or skipped;
* two drainers never write different files for the same entries, and a drainer whose lock
  expired mid-write cannot move the cursor (:class:`~core.storage.drain_cursors.LockLost`);
* slices without entries are skipped without a file; a slice trimmed away before it was
  drained is lost (the stream is capped: drain more often than it fills).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import redis

from core.decision_files.rows import decision_table, outcome_table
from core.decision_files.store import Store
from core.storage import StreamEntry
from core.storage.decision_log import DecisionLog, stream_id
from core.storage.drain_cursors import DrainCursors

log = logging.getLogger(__name__)

CLOSE_MARGIN_MS = 2_000  # clock steps and pipelines in flight at the end of a slice
LOCK_SECONDS = 300.0  # longer than writing one slice takes; renewed at every slice
PAGE = 1_000

Reader = Callable[[str, str, int], list[StreamEntry]]


@dataclass(frozen=True)
class Source:
    """A stream drained into files: its name (the files' directory), reader and row maker."""

    name: str
    read: Reader
    table: Callable[[Iterable[StreamEntry]], pa.Table]


def sources(decisions: DecisionLog) -> tuple[Source, ...]:
    """The streams of the decision log, as core.storage.decision_log reads them: the decisions
    of every shard merged into one, and the outcomes of every forum's stream merged into one."""
    return (
        Source("decisions", decisions.read_decisions, decision_table),
        Source("outcomes", merged_outcomes(decisions), outcome_table),
    )


def merged_outcomes(decisions: DecisionLog) -> Reader:
    """A reader of every outcome stream at once, in stream-id order (as the decisions' shards
    are read: :meth:`~core.storage.decision_log.DecisionLog.read_merged`)."""

    def read(start: str, end: str, count: int) -> list[StreamEntry]:
        return decisions.read_merged(decisions.outcome_streams(), start, end, count)

    return read


@dataclass
class Drained:
    slices: int = 0  # slices the cursors moved past (with or without a file)
    files: int = 0  # files written
    entries: int = 0  # stream entries in them


def drain(
    cursors: DrainCursors,
    streams: Iterable[Source],
    store: Store,
    slice_ms: int,
    now_ms: int,
    max_slices: int = 100,
    margin_ms: int = CLOSE_MARGIN_MS,
    lock_seconds: float = LOCK_SECONDS,
) -> Drained | None:
    """Drain up to ``max_slices`` slices of each stream closed for ``margin_ms`` at ``now_ms``
    (the Redis clock: a later clock would drain slices that entries may still join); None
    when another drainer holds the lock. The lock lives ``lock_seconds`` from its taking and
    from each slice drained: a drainer killed meanwhile holds the others up that long.

    Raises:
        redis.RedisError: Redis failed; OSError: the store refused a file;
        LockLost: the lock expired meanwhile. Cursors stand where the last whole file is.
    """
    lock = cursors.lock(lock_seconds)
    if not lock.acquire():
        return None
    try:
        done = Drained()
        for source in streams:
            closed_ms = now_ms - margin_ms
            _drain_source(cursors, lock, source, store, slice_ms, closed_ms, max_slices, done)
        return done
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # expired meanwhile
            lock.release()


def _drain_source(
    cursors: DrainCursors,
    lock: redis.lock.Lock,
    source: Source,
    store: Store,
    slice_ms: int,
    closed_ms: int,
    max_slices: int,
    done: Drained,
) -> None:
    cursor = cursors.get(source.name)
    for _ in range(max_slices):
        start = _next_start(source, cursor, slice_ms)
        if start is None:
            return
        end = (start // slice_ms + 1) * slice_ms
        if end > closed_ms:
            return
        entries = list(_scan(source.read, start, end))
        path = store.path(source.name, start, end)
        if entries and not store.exists(path):
            store.write(path, source.table(entries))
            log.info("decision log file written", extra={"path": path, "entries": len(entries)})
            done.files += 1
            done.entries += len(entries)
        cursors.advance(source.name, cursor, end, lock)
        cursor = end
        done.slices += 1


def oldest_waiting(cursors: DrainCursors, streams: Iterable[Source]) -> dict[str, int | None]:
    """Per stream, the time (unix ms, Redis clock) of its oldest entry not yet drained (at or
    after its cursor; any, before the first drain), None when every entry is drained.

    Raises:
        redis.RedisError: Redis failed.
    """
    waiting: dict[str, int | None] = {}
    for source in streams:
        cursor = cursors.get(source.name)
        first = source.read("-" if cursor is None else str(cursor), "+", 1)
        waiting[source.name] = stream_id(first[0][0])[0] if first else None
    return waiting


def _next_start(source: Source, cursor: int | None, slice_ms: int) -> int | None:
    """Where the next slice with entries starts: the slice of the first entry at or after
    ``cursor``, but not before it (a slice length changed since starts at the cursor)."""
    first = source.read("-" if cursor is None else str(cursor), "+", 1)
    if not first:
        return None
    aligned = int(first[0][0].split("-")[0]) // slice_ms * slice_ms
    return aligned if cursor is None else max(cursor, aligned)


def _scan(read: Reader, start_ms: int, end_ms: int) -> Iterator[StreamEntry]:
    """Every entry with ids in [start_ms, end_ms), a page at a time."""
    start, last = str(start_ms), str(end_ms - 1)  # a bare ms includes every sequence number
    while True:
        page = read(start, last, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        start = f"({page[-1][0]}"
