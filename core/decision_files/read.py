"""Reading the decision files back: decisions joined with their final outcomes.

Offline tools may read the directories themselves (``pyarrow.dataset``, ``pandas.read_parquet``,
DuckDB's ``read_parquet('<root>/decisions/*/*.parquet', hive_partitioning=true)``); this is the
join they need, as the export uses it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.decision_files.rows import DECISIONS, JOINED, OUTCOMES
from core.decision_files.store import Store

KEYS = ["request_id", "post_id"]
# File names carry the Redis clock, decision timestamps the web process's: allow for skew.
CLOCK_SKEW_MS = 60_000


def read_joined(store: Store, since_ms: int, until_ms: int, window_ms: int) -> pa.Table:
    """One row per shown post of the decisions with timestamps in [since_ms, until_ms], with
    ``impression`` and ``click`` from every outcome logged up to ``window_ms`` later, in time
    order (schema :data:`~core.decision_files.rows.JOINED`).

    Raises:
        OSError: the store could not be read; pyarrow.ArrowInvalid: a file is not Parquet.
    """
    decisions = _read(store, "decisions", DECISIONS, since_ms, until_ms)
    stamp = pc.field("timestamp")
    decisions = decisions.filter(
        (stamp >= pa.scalar(since_ms, DECISIONS.field("timestamp").type))
        & (stamp <= pa.scalar(until_ms, DECISIONS.field("timestamp").type))
    )
    outcomes = _read(store, "outcomes", OUTCOMES, since_ms, until_ms + window_ms)
    joined = decisions.join(_pairs(outcomes, None, "impression"), KEYS, join_type="left outer")
    joined = joined.join(_pairs(outcomes, "c", "click"), KEYS, join_type="left outer")
    joined = joined.set_column(
        joined.schema.get_field_index("impression"), "impression",
        pc.fill_null(joined["impression"], False),
    )  # fmt: skip
    joined = joined.set_column(
        joined.schema.get_field_index("click"), "click", pc.fill_null(joined["click"], False)
    )
    ordered = joined.select(JOINED.names).cast(JOINED)
    return ordered.sort_by([("timestamp", "ascending"), ("request_id", "ascending"),
                            ("position", "ascending")])  # fmt: skip


def _read(store: Store, source: str, schema: pa.Schema, since_ms: int, until_ms: int) -> pa.Table:
    """The rows of the files of ``source`` whose slices may hold entries of [since, until]."""
    paths = [p for p in store.dataset_paths(source) if _overlaps(p, since_ms, until_ms)]
    if not paths:
        return schema.empty_table()
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=store.fs).to_table()


def _overlaps(path: str, since_ms: int, until_ms: int) -> bool:
    start, end = (int(part) for part in path.rsplit(".", 1)[0].rsplit("-", 2)[1:])
    return start <= until_ms + CLOCK_SKEW_MS and end > since_ms - CLOCK_SKEW_MS


def _pairs(outcomes: pa.Table, kind: str | None, column: str) -> pa.Table:
    """The distinct (request, post) pairs with an outcome (of ``kind``; any), flagged true."""
    if kind is not None:
        outcomes = outcomes.filter(pc.field("kind") == kind)
    distinct = outcomes.select(KEYS).group_by(KEYS).aggregate([])
    return distinct.append_column(column, pa.array([True] * distinct.num_rows, pa.bool_()))
