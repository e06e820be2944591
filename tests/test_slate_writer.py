"""The slate writer (app.slate_writer) with plain threads against a real Redis: it writes by
itself, sooner once a batch is full, keeps what a failing Redis did not take and writes it
once Redis answers, drops the oldest beyond its bound (counted), and writes all at stop."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis

from app import slate_writer
from app.slate_writer import SlateWriter
from core import metrics
from core.storage import Served, Storage, new_request_id
from core.storage.serving import ToServe
from devtools.redis_server import free_port
from tests.processes import wait_for

TTL = 600


def slates(count: int) -> list[ToServe]:
    return [(Served(new_request_id(f"u{i}"), f"u{i}", "random", {"p": "f"}), TTL, {"r": str(i)})
            for i in range(count)]  # fmt: skip


def stored(storage: Storage, batch: list[ToServe]) -> int:
    return len(storage.serving.lookup(s.request_id for s, _, _ in batch))


def test_slates_are_written_by_the_thread_and_sooner_once_a_batch_is_full(
    storage: Storage,
) -> None:
    writer = SlateWriter(storage.serving.steps, interval=0.01)
    try:
        first = slates(3)
        for slate in first:
            writer.add(slate)
        wait_for(lambda: stored(storage, first) == 3, 10, "the thread to write the slates")
    finally:
        writer.stop()
    slow = SlateWriter(storage.serving.steps, interval=60.0)
    try:
        full = slates(slate_writer.MAX_BATCH)
        for slate in full:
            slow.add(slate)
        # Long before the 60 s interval: a full batch wakes the thread.
        wait_for(lambda: stored(storage, full) == len(full), 20, "the full batch to be written")
    finally:
        slow.stop()


def dropped_total() -> float:
    return metrics.WEB.get_sample_value("postbandit_slates_dropped_total") or 0.0


class Switch:
    """Writes through a Redis that does not answer until ``live`` is set."""

    def __init__(self, storage: Storage) -> None:
        self.live = False
        self.storage = storage
        self.dead = Storage(redis.Redis(port=free_port(), socket_timeout=0.2), "pb")

    def write(self, batch: Sequence[ToServe]) -> None:
        (self.storage if self.live else self.dead).serving.serve_many(batch)


def test_a_failing_redis_keeps_the_slates_drops_the_oldest_beyond_the_bound_and_writes_the_rest(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slate_writer, "MAX_PENDING", 5)
    switch = Switch(storage)
    writer = SlateWriter([switch.write], interval=0.01)
    dropped = dropped_total()
    batch = slates(8)
    try:
        for slate in batch:
            writer.add(slate)
        wait_for(lambda: dropped_total() - dropped == 3, 10, "3 dropped")
        assert writer.pending == 5
        switch.live = True
        wait_for(lambda: writer.pending == 0, 20, "the kept slates to be written")
    finally:
        writer.stop()
        switch.dead.client.close()
    assert stored(storage, batch[:3]) == 0 and stored(storage, batch[3:]) == 5


def test_slates_beyond_the_bound_are_dropped_as_they_come_not_only_after_a_failed_write(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between two tries the thread waits out its back-off (up to 5 s), while requests go on.
    monkeypatch.setattr(slate_writer, "MAX_PENDING", 5)
    switch = Switch(storage)
    writer = SlateWriter([switch.write], interval=60.0)
    dropped = dropped_total()
    batch = slates(8)
    try:
        for slate in batch:
            writer.add(slate)
        assert writer.pending == 5 and dropped_total() - dropped == 3
        switch.live = True
    finally:
        writer.stop()
        switch.dead.client.close()
    assert stored(storage, batch[:3]) == 0 and stored(storage, batch[3:]) == 5


def test_stop_writes_every_slate_held(storage: Storage) -> None:
    writer = SlateWriter(storage.serving.steps, interval=60.0)
    batch = slates(10)
    for slate in batch:
        writer.add(slate)
    assert stored(storage, batch) == 0
    writer.stop()
    assert stored(storage, batch) == 10 and writer.pending == 0


def test_a_batch_that_fails_partway_is_written_again_from_the_failed_step_only(
    rclient: redis.Redis,
) -> None:
    # One slate's key cannot take it (as when its slot's master is down on a Redis Cluster):
    # every write of the batch fails, again and again, while the other slate's own write
    # succeeds. Its experiment count and decision must not be repeated with each try.
    storage = Storage(rclient, "pb", decision_log_maxlen=1000)
    broken, fine = (Served(new_request_id(u), u, "random", {"p": "f"}, "x1", "A") for u in "ab")
    rclient.set(storage.keys.served(broken.request_id), "not a hash")
    writer = SlateWriter(storage.serving.steps, interval=60.0)
    for served in (broken, fine):
        writer.add((served, TTL, {"r": served.request_id}))
    for _ in range(3):
        with pytest.raises(redis.ResponseError):
            writer.flush()
    rclient.delete(storage.keys.served(broken.request_id))
    assert writer.flush() == 2
    counts = rclient.hgetall(storage.keys.experiment_counts("x1"))
    assert sum(int(v) for k, v in counts.items() if k.endswith(b"|s")) == 2
    assert sum(rclient.xlen(key) for key in storage.keys.decision_streams) == 2
    assert stored(storage, [(broken, TTL, None), (fine, TTL, None)]) == 2
