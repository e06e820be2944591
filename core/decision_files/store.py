"""Where the decision files live, and how one is written durably.

Layout under the root (a directory or any fsspec URL)::

    <root>/<source>/date=YYYY-MM-DD/<source>-<start ms>-<end ms>.parquet

``source`` is the stream drained (``decisions``, ``outcomes``); a file holds the entries of the
time slice [start, end) of that stream's ids (unix ms, zero-padded so names sort by time), and
``date`` is the UTC day of its start (a Hive partition that pyarrow, DuckDB and polars read).
The name follows from the slice alone, so a slice written again after a crash replaces its
file instead of adding a second one.

A file appears whole or not at all: in a local directory it is written to a hidden temporary
file (``.``-prefixed: dataset readers skip it), flushed to disk and renamed; an object store
publishes an object only once it is completely uploaded. A temporary file that a drainer
killed mid-write left behind is removed when its slice is written again.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem


class StoreError(ValueError):
    """The URL names no filesystem that fsspec can open here."""


class Store:
    """The decision files under ``url``.

    Raises:
        StoreError: unknown protocol, or its fsspec implementation is not installed.
    """

    def __init__(self, url: str) -> None:
        if not url:
            raise StoreError("no decision log URL given")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as exc:
            raise StoreError(f"fsspec cannot open the URL: {exc}") from None
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, source: str, start_ms: int, end_ms: int) -> str:
        """The file of the slice [start_ms, end_ms) of ``source``."""
        day = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%d")
        name = f"{source}-{start_ms:013d}-{end_ms:013d}.parquet"
        return f"{self.root}/{source}/date={day}/{name}"

    def exists(self, path: str) -> bool:
        """Whether the file is there (then whole: files appear whole or not at all)."""
        return bool(self.fs.exists(path))

    def write(self, path: str, table: pa.Table) -> None:
        """Write ``table`` to ``path``, replacing it, durably.

        Raises:
            OSError: the filesystem refused (full, read-only, unreachable); nothing is at
                ``path`` then that was not there before.
        """
        directory = path.rsplit("/", 1)[0]
        self.fs.makedirs(directory, exist_ok=True)
        if not self.local:
            with self.fs.open(path, "wb") as out:
                pq.write_table(table, out)
            return
        name = path.rsplit("/", 1)[1]
        for stale in Path(directory).glob(f".{name}.*.tmp"):  # left by a drainer killed mid-write
            stale.unlink(missing_ok=True)
        temporary = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "wb") as out:
                pq.write_table(table, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        _sync_directory(directory)

    def dataset_paths(self, source_prefix: str) -> list[str]:
        """The Parquet files of every source whose name starts with ``source_prefix``
        (``outcomes`` also finds sharded ``outcomes-<shard>`` sources), in name order."""
        found = self.fs.glob(f"{self.root}/{source_prefix}*/date=*/*.parquet")
        return sorted(p for p in found if not p.rsplit("/", 1)[1].startswith("."))


def _sync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX: fsync the directory)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
