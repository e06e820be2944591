"""The decision log kept in Parquet files: drained by closed time slice, resumably, one drainer
at a time, and read back joined with outcomes in the documented schema."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import redis

from core.decision_files.drain import Drained, drain, merged_outcomes, oldest_waiting, sources
from core.decision_files.read import read_joined
from core.decision_files.rows import DECISIONS, JOINED, OUTCOMES
from core.decision_files.store import Store, StoreError
from core.storage import Served, Storage, new_request_id
from core.storage.drain_cursors import LockLost
from tests.processes import wait_for

SLICE_MS = 50  # short slices, so that the real Redis clock passes them within moments
WINDOW_MS = 3_600_000
POSTS = {"p1": "f1", "p2": "f1", "p3": "f2"}


@pytest.fixture
def log_storage(rclient: redis.Redis) -> Storage:
    storage = Storage(rclient, "pb", decision_log_maxlen=10_000)
    now = time.time()
    for post, forum in POSTS.items():
        storage.catalogue.put_post(post, forum, now, now + 3600, 60)
    return storage


def serve(storage: Storage, user: str = "u", **extra: str) -> str:
    """A served three-post slate, logged as the web tier logs it (app.decisions.fields)."""
    request_id = new_request_id(user)
    fields: dict[str, Any] = {
        "request_id": request_id, "time": round(time.time(), 3), "user_id": user,
        "policy": "explore", "candidates": 3, "posts": json.dumps(list(POSTS)),
        "forums": json.dumps(list(POSTS.values())), "scores": "[0.5, 0.25, 0.125]",
        "alpha": "[1.0, 2.0, 3.0]", "beta": "[4.0, 5.0, 6.0]", **extra,
    }  # fmt: skip
    storage.serving.serve(Served(request_id, user, "explore", dict(POSTS)), 3600, fields)
    return request_id


def closed(storage: Storage) -> int:
    """The Redis clock once it has passed the slices of every entry so far, in both streams
    (the clock of the stream ids, so no entry can join them later)."""
    keys = (*storage.keys.decision_streams, *storage.decisions.outcome_streams())
    newest = [storage.client.xrevrange(key, count=1) for key in keys]
    last = max((int(n[0][0].split(b"-")[0]) for n in newest if n), default=0)
    wait_for(lambda: storage.drains.server_ms() >= (last // SLICE_MS + 1) * SLICE_MS, 10,
             "the Redis clock to pass the newest slice")  # fmt: skip
    return storage.drains.server_ms()


def run(storage: Storage, store: Store, slice_ms: int = SLICE_MS) -> Drained | None:
    """Drain what the Redis clock has closed (no margin: the test's clock does not step)."""
    now = closed(storage) if slice_ms == SLICE_MS else storage.drains.server_ms()
    return drain(storage.drains, sources(storage.decisions), store, slice_ms, now, margin_ms=0)


def joined(store: Store) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_joined(store, 0, 2**42, WINDOW_MS).to_pylist()
    return rows


def test_drained_files_read_back_with_the_documented_schema(
    log_storage: Storage, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "log"))
    first = serve(log_storage, propensities="[0.25, 0.25, 0.25]", variant="b", experiment="x")
    second = serve(log_storage, "v")
    log_storage.counting.apply_events("i", [(first, "p1", "f1")], 60)
    log_storage.counting.apply_events("c", [(first, "p2", "f1")], 60)  # counts its impression
    log_storage.counting.apply_events("c", [(first, "p2", "f1")], 60)  # a replay: once

    done = run(log_storage, store)
    # 2 slates, 2 outcomes: the replay counts nothing and logs nothing
    assert done is not None and done.entries == 2 + 2
    assert done.files == len(list((tmp_path / "log").glob("*/date=*/*.parquet"))) >= 2

    decisions = ds.dataset(str(tmp_path / "log" / "decisions"), partitioning="hive")
    assert decisions.schema.remove(decisions.schema.get_field_index("date")) == DECISIONS
    assert decisions.to_table().num_rows == 6  # one row per shown post
    outcomes = ds.dataset(str(tmp_path / "log" / "outcomes"), format="parquet")
    assert outcomes.schema == OUTCOMES

    table = read_joined(store, 0, 2**42, WINDOW_MS)
    assert table.schema == JOINED
    rows = {(r["request_id"], r["post_id"]): r for r in table.to_pylist()}
    assert len(rows) == 6
    assert rows[first, "p1"]["impression"] and not rows[first, "p1"]["click"]
    assert rows[first, "p2"]["impression"] and rows[first, "p2"]["click"]
    assert not rows[first, "p3"]["impression"] and not rows[second, "p1"]["impression"]
    assert [rows[first, p]["position"] for p in POSTS] == [1, 2, 3]
    assert (rows[first, "p3"]["propensity"], rows[first, "p3"]["variant"]) == (0.25, "b")
    assert rows[first, "p3"]["experiment"] == "x" and rows[first, "p3"]["score"] == 0.125
    assert rows[second, "p1"]["propensity"] is None and rows[second, "p1"]["variant"] is None


def test_pandas_reads_the_joined_log(log_storage: Storage, tmp_path: Path) -> None:
    import pandas as pd

    store = Store(str(tmp_path / "log"))
    serve(log_storage)
    run(log_storage, store)
    frame = read_joined(store, 0, 2**42, WINDOW_MS).to_pandas()
    assert list(frame.columns) == JOINED.names
    assert frame["impression"].dtype == bool and frame["click"].dtype == bool
    assert isinstance(frame["timestamp"].dtype, pd.DatetimeTZDtype)
    assert len(pd.read_parquet(tmp_path / "log" / "decisions")) == 3


def test_an_open_slice_waits_and_drained_slices_are_not_written_again(
    log_storage: Storage, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "log"))
    serve(log_storage)
    assert run(log_storage, store, slice_ms=3_600_000) == Drained()  # its hour has not passed
    assert list((tmp_path / "log").glob("**/*.parquet")) == []
    assert run(log_storage, store) == Drained(slices=1, files=1, entries=1)
    assert run(log_storage, store) == Drained()  # resumes after the cursor: nothing new
    serve(log_storage)
    serve(log_storage)
    again = run(log_storage, store)
    assert again is not None and again.entries == 2
    assert len({r["request_id"] for r in joined(store)}) == 3


def test_a_drainer_that_stopped_before_moving_its_cursor_rewrites_the_same_file(
    log_storage: Storage, rclient: redis.Redis, tmp_path: Path
) -> None:
    """The state a worker killed between writing a file and moving the cursor leaves."""
    store = Store(str(tmp_path / "log"))
    for _ in range(3):
        serve(log_storage)
    run(log_storage, store)
    files = sorted(p.name for p in (tmp_path / "log").glob("**/*.parquet"))
    rclient.delete(log_storage.keys.drain_cursors)
    # and one killed mid-write leaves a hidden temporary file, which readers skip:
    day = next((tmp_path / "log" / "decisions").iterdir())
    (day / ".decisions-partial.parquet.0.tmp").write_bytes(b"PAR1 half a file")
    written = next(day.glob("decisions-*.parquet"))
    stale = day / f".{written.name}.0123abcd.tmp"  # the slice's own, as Store.write names it
    stale.write_bytes(b"PAR1 half a file")
    for path in (tmp_path / "log").glob("**/*.parquet"):
        path.unlink()  # e.g. the rename never happened

    redone = run(log_storage, store)
    assert not stale.exists()  # removed when its slice was written again
    assert redone == Drained(slices=len(files), files=len(files), entries=3)
    assert sorted(p.name for p in (tmp_path / "log").glob("**/*.parquet")) == files
    assert len(joined(store)) == 9  # three slates of three posts, none twice
    rclient.delete(log_storage.keys.drain_cursors)
    kept = run(log_storage, store)
    assert kept == Drained(slices=len(files))  # whole files are kept, not rewritten
    assert len(joined(store)) == 9


def test_one_drainer_at_a_time(log_storage: Storage, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "log"))
    serve(log_storage)
    held = log_storage.drains.lock(60)
    assert held.acquire()
    assert run(log_storage, store) is None
    held.release()
    assert run(log_storage, store) == Drained(slices=1, files=1, entries=1)


def test_a_drainer_killed_holding_the_lock_holds_the_drain_up_for_its_lifetime_only(
    log_storage: Storage, rclient: redis.Redis, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "log"))
    serve(log_storage)
    dead = log_storage.drains.lock(5)  # BANDIT_DECISION_LOG_LOCK_SECONDS at its least
    assert dead.acquire()  # and never released: its worker was killed
    assert 0 < rclient.pttl(log_storage.keys.drain_lock) <= 5_000
    assert run(log_storage, store) is None
    wait_for(lambda: not rclient.exists(log_storage.keys.drain_lock), 10, "the lock to expire")
    assert run(log_storage, store) == Drained(slices=1, files=1, entries=1)


def test_the_oldest_entry_waiting_is_what_the_drain_has_not_written(
    log_storage: Storage, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "log"))
    streams = sources(log_storage.decisions)
    assert oldest_waiting(log_storage.drains, streams) == {"decisions": None, "outcomes": None}
    first = serve(log_storage)
    serve(log_storage)
    log_storage.counting.apply_events("i", [(first, "p1", "f1")], 60)
    before_drain = decision_ms(log_storage, oldest=True)
    waiting = oldest_waiting(log_storage.drains, streams)  # nothing drained yet: the oldest
    assert waiting["decisions"] == before_drain and waiting["outcomes"] is not None
    run(log_storage, store)
    assert oldest_waiting(log_storage.drains, streams) == {"decisions": None, "outcomes": None}
    serve(log_storage)
    assert oldest_waiting(log_storage.drains, streams) == {
        "decisions": decision_ms(log_storage, oldest=False), "outcomes": None}  # fmt: skip


def decision_ms(storage: Storage, oldest: bool) -> int:
    """The time (ms) of the oldest or the newest entry over every decision stream shard."""
    read = storage.client.xrange if oldest else storage.client.xrevrange
    found = [
        int(e[0][0].split(b"-")[0])
        for k in storage.keys.decision_streams
        if (e := read(k, count=1))
    ]
    return min(found) if oldest else max(found)


def test_a_drainer_whose_lock_expired_cannot_move_the_cursor(
    log_storage: Storage, rclient: redis.Redis
) -> None:
    mine = log_storage.drains.lock(60)
    assert mine.acquire()
    rclient.delete(log_storage.keys.drain_lock)  # expired
    theirs = log_storage.drains.lock(60)
    assert theirs.acquire()
    with pytest.raises(LockLost):
        log_storage.drains.advance("decisions", None, 10_000, mine)
    log_storage.drains.advance("decisions", None, 10_000, theirs)
    with pytest.raises(LockLost):  # the cursor moved on since this drainer read it
        log_storage.drains.advance("decisions", None, 20_000, theirs)
    assert log_storage.drains.get("decisions") == 10_000


def test_entries_trimmed_before_the_drain_leave_a_gap_not_a_stall(
    log_storage: Storage, rclient: redis.Redis, tmp_path: Path
) -> None:
    store = Store(str(tmp_path / "log"))
    gone = serve(log_storage)
    for stream in log_storage.keys.decision_streams:
        rclient.xtrim(stream, maxlen=0)  # trimmed under the drain
    kept = serve(log_storage)
    run(log_storage, store)
    assert {r["request_id"] for r in joined(store)} == {kept} != {gone}


def test_an_unwritable_store_keeps_the_cursor_until_it_can_write(
    log_storage: Storage, tmp_path: Path
) -> None:
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "decisions").write_text("a file where the directory should be")
    store = Store(str(tmp_path / "log"))
    serve(log_storage)
    with pytest.raises(OSError):
        run(log_storage, store)
    assert log_storage.drains.get("decisions") is None
    assert not log_storage.client.exists(log_storage.keys.drain_lock)  # released
    (tmp_path / "log" / "decisions").unlink()
    assert run(log_storage, store) == Drained(slices=1, files=1, entries=1)


def test_any_fsspec_filesystem_holds_the_files(log_storage: Storage) -> None:
    store = Store(f"memory://declog-{new_request_id('t')}")
    serve(log_storage)
    run(log_storage, store)
    assert [r["post_id"] for r in joined(store)] == list(POSTS)


@pytest.mark.parametrize("url", ["nosuch://bucket/x", "s3://bucket/x", ""])
def test_a_url_fsspec_cannot_open_is_refused(url: str) -> None:
    with pytest.raises(StoreError):
        Store(url)


def test_an_unreadable_entry_is_left_out_not_a_stall(
    log_storage: Storage, rclient: redis.Redis, tmp_path: Path
) -> None:
    # In the stream of releases before the shards, which the drain reads too.
    rclient.xadd(log_storage.keys.legacy_decisions, {"request_id": "r", "posts": "not json"})
    serve(log_storage)
    store = Store(str(tmp_path / "log"))
    assert run(log_storage, store) is not None
    assert len(joined(store)) == 3
    assert pa.__version__  # pyarrow is what reads them


def test_outcome_streams_are_merged_without_skipping_equal_ids(
    log_storage: Storage, rclient: redis.Redis
) -> None:
    """Entries of two forums' streams may share an id; pages of one entry still read them all."""
    keys = log_storage.keys
    for forum, ids in (("f1", ["5-0", "7-0"]), ("f2", ["5-0", "6-0", "7-0"])):
        rclient.sadd(keys.outcome_forums, forum)
        for entry_id in ids:
            rclient.xadd(keys.forum_outcomes(forum), {"r": forum, "p": entry_id}, id=entry_id)
    read, start, seen = merged_outcomes(log_storage.decisions), "-", []
    while page := read(start, "+", 1):
        seen += [(fields["r"], entry_id) for entry_id, fields in page]
        start = f"({page[-1][0]}"
    assert sorted(seen) == [("f1", "5-0"), ("f1", "7-0"), ("f2", "5-0"), ("f2", "6-0"),
                            ("f2", "7-0")]  # fmt: skip
    assert [entry_id for _, entry_id in seen] == ["5-0", "5-0", "6-0", "7-0", "7-0"]
