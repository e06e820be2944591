"""The last good snapshot on disk: what is written reads back the same, a bad, foreign or old
file is ignored with a warning, concurrent writers never leave a broken file, and a process
that cannot reach Redis at start serves from the file."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from app.snapshot import Refresher, Snapshot, SnapshotCache
from app.snapshot_file import FORMAT_VERSION, SnapshotFile, snapshot_file
from core.settings import Settings
from core.storage import Storage
from tests.test_snapshot import content, event, put


@pytest.fixture
def saved(storage: Storage) -> Snapshot:
    """A snapshot of two forums, counts, and a withdrawn post that is not a candidate."""
    for post_id, forum_id in [("a1", "fa"), ("a2", "fa"), ("b1", "fb"), ("gone", "fb")]:
        put(storage, post_id, forum_id)
    event(storage, "i", "a1", "fa", "r1")
    event(storage, "c", "a1", "fa", "r1")
    storage.catalogue.delete_post("gone", time.time())
    return Refresher(storage)()


def unreachable() -> Snapshot:
    raise redis.ConnectionError("Redis is down in this test")


def test_a_saved_snapshot_loads_back_the_same(saved: Snapshot, tmp_path: Path) -> None:
    file = SnapshotFile(tmp_path / "s.npz")
    file.save(saved)
    loaded = file.load()
    assert loaded is not None
    assert content(loaded) == content(saved)
    assert set(content(loaded)["posts"]) == {"a1", "a2", "b1"}
    assert loaded.built_at == saved.built_at and loaded.next_expiry == saved.next_expiry
    excluded = loaded.excluded(["b1"], time.time())
    assert excluded is not None and loaded.items(excluded) == [("b1", "fb")]
    assert not list(tmp_path.glob(".snapshot-*")), "a temporary file was left behind"


def test_an_empty_snapshot_round_trips(storage: Storage, tmp_path: Path) -> None:
    file = SnapshotFile(tmp_path / "s.npz")
    file.save(Refresher(storage)())
    loaded = file.load()
    assert loaded is not None and loaded.size == 0 and loaded.forum_ids == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not a zip at all"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:200]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(
            lambda p: _rewrite(p, version=np.array([FORMAT_VERSION + 1])), id="other version"
        ),
        pytest.param(lambda p: _rewrite(p, post_clicks=np.array([1.0])), id="wrong length"),
        pytest.param(lambda p: _rewrite(p, post_clicks=np.array([9.0, 0, 0])), id="clicks>imps"),
        pytest.param(lambda p: _rewrite(p, drop="post_ids"), id="missing array"),
        pytest.param(lambda p: _rewrite(p, built_at=np.array([time.time() - 2e5])), id="too old"),
        pytest.param(lambda p: _rewrite(p, built_at=np.array([time.time() + 3e3])), id="future"),
    ],
)
def test_a_bad_file_is_ignored_with_a_warning(
    saved: Snapshot, tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    file = SnapshotFile(tmp_path / "s.npz")
    file.save(saved)
    damage(file.path)
    with caplog.at_level(logging.WARNING, logger="app.snapshot_file"):
        assert file.load() is None
    assert [r.name for r in caplog.records] == ["app.snapshot_file"], caplog.records


def test_no_file_is_no_snapshot_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert SnapshotFile(tmp_path / "none" / "s.npz").load() is None
    assert not caplog.records


def _rewrite(path: Path, drop: str = "", **replace: np.ndarray) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != drop}
    np.savez(path, **{**arrays, **replace})


def test_saves_are_spaced_also_across_processes(saved: Snapshot, tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    first, sibling = SnapshotFile(path, save_every=60), SnapshotFile(path, save_every=60)
    assert first.save_if_due(saved)
    assert not first.save_if_due(saved), "this process wrote it just now"
    assert not sibling.save_if_due(saved), "another process wrote it just now"
    old = time.time() - 120
    os.utime(path, (old, old))
    assert sibling.save_if_due(saved)


def test_a_write_that_fails_is_logged_not_raised(
    saved: Snapshot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("a file where the directory should be")
    file = SnapshotFile(tmp_path / "file" / "s.npz")
    with caplog.at_level(logging.WARNING, logger="app.snapshot_file"):
        assert not file.save_if_due(saved)
    assert "could not write the snapshot file" in caplog.text


def test_concurrent_writers_never_leave_a_broken_file(
    saved: Snapshot, storage: Storage, tmp_path: Path
) -> None:
    path = tmp_path / "s.npz"
    put(storage, "c1", "fc")
    other = Refresher(storage)()
    SnapshotFile(path).save(saved)
    stop, loads = threading.Event(), []

    def write(snapshot: Snapshot) -> None:
        file = SnapshotFile(path)
        while not stop.is_set():
            file.save(snapshot)

    writers = [threading.Thread(target=write, args=(s,)) for s in (saved, other)]
    for writer in writers:
        writer.start()
    try:
        reader = SnapshotFile(path)
        while len(loads) < 200:
            loaded = reader.load()
            assert loaded is not None, "a reader found a broken file"
            loads.append(loaded.size)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert set(loads) <= {saved.size, other.size}
    assert not list(tmp_path.glob(".snapshot-*")), "a temporary file was left behind"


def test_a_process_without_redis_serves_the_file_once_redis_did_not(
    saved: Snapshot, storage: Storage, tmp_path: Path
) -> None:
    file = SnapshotFile(tmp_path / "s.npz")
    healthy = SnapshotCache(Refresher(storage), interval=30, file=file)
    try:
        assert healthy.start()
    finally:
        healthy.stop()
    assert file.path.exists(), "a good snapshot is written at once"
    starting = SnapshotCache(unreachable, interval=30, file=file)
    try:
        assert starting.start()
        snap = starting.get()
        assert snap is not None and content(snap) == content(saved)
    finally:
        starting.stop()


def test_without_a_usable_file_there_is_no_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    path.write_bytes(b"corrupt")
    cache = SnapshotCache(unreachable, interval=30, file=SnapshotFile(path))
    try:
        assert not cache.start() and cache.get() is None
    finally:
        cache.stop()


def test_services_sharing_a_directory_have_their_own_files(tmp_path: Path) -> None:
    def path(**values: str) -> Path:
        values = {"BANDIT_SNAPSHOT_DIR": str(tmp_path), **values}
        file = snapshot_file(Settings.from_mapping(values))
        assert file is not None
        return file.path

    assert path() == path()
    assert path(REDIS_URL="redis://other:6379/0") != path()
    assert path(BANDIT_KEY_PREFIX="other") != path()
    assert path().parent == tmp_path
    assert snapshot_file(Settings.from_mapping({"BANDIT_SNAPSHOT_DIR": ""})) is None
