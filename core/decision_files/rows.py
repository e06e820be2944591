"""The schemas of the decision files, and stream entries turned into their rows.

A decision entry (app.decisions.fields) becomes one row per shown post. ``variant``,
``experiment`` and ``propensities`` (a JSON array aligned with ``posts``) are read when the
entry has them and are null otherwise, as is the propensity of a policy that does not know it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import pyarrow as pa

from core.storage import StreamEntry

log = logging.getLogger(__name__)

TIMESTAMP = pa.timestamp("ms", tz="UTC")
DECISIONS = pa.schema([
    ("timestamp", TIMESTAMP), ("request_id", pa.string()), ("user_id", pa.string()),
    ("policy", pa.string()), ("variant", pa.string()), ("experiment", pa.string()),
    ("position", pa.int32()), ("post_id", pa.string()), ("forum_id", pa.string()),
    ("score", pa.float64()), ("propensity", pa.float64()), ("alpha", pa.float64()),
    ("beta", pa.float64()), ("candidates", pa.int32()), ("stream_id", pa.string()),
])  # fmt: skip
OUTCOMES = pa.schema([
    ("timestamp", TIMESTAMP), ("request_id", pa.string()), ("post_id", pa.string()),
    ("kind", pa.string()), ("stream_id", pa.string()),
])  # fmt: skip
# What a reader gets: a decision row with its final outcome (a click counts its impression).
JOINED = pa.schema([*DECISIONS, ("impression", pa.bool_()), ("click", pa.bool_())])
_PER_POST = ("posts", "forums", "scores", "alpha", "beta")


def decision_table(entries: Iterable[StreamEntry]) -> pa.Table:
    """One row per shown post of the decision entries; an unreadable entry is logged and left
    out (it could never be read, and must not stop the drain)."""
    rows: list[dict[str, object]] = []
    for entry_id, entry in entries:
        try:
            rows.extend(_decision_rows(entry_id, entry))
        except (KeyError, ValueError, TypeError) as exc:
            log.error("leaving out unreadable decision entry %s: %r", entry_id, exc)
    return pa.Table.from_pylist(rows, schema=DECISIONS)


def _decision_rows(entry_id: str, entry: dict[str, str]) -> list[dict[str, object]]:
    columns = [json.loads(entry[name]) for name in _PER_POST]
    count = len(columns[0])
    raw = entry.get("propensities")
    propensities = json.loads(raw) if raw else [None] * count
    if any(len(column) != count for column in (*columns, propensities)):
        raise ValueError("per-post arrays of different lengths")
    shared = {
        "timestamp": round(float(entry["time"]) * 1000), "request_id": entry["request_id"],
        "user_id": entry["user_id"], "policy": entry["policy"],
        "variant": entry.get("variant") or None, "experiment": entry.get("experiment") or None,
        "candidates": int(entry["candidates"]), "stream_id": entry_id,
    }  # fmt: skip
    return [
        {**shared, "position": rank, "post_id": post, "forum_id": forum, "score": score,
         "alpha": alpha, "beta": beta, "propensity": propensity}
        for rank, (post, forum, score, alpha, beta, propensity)
        in enumerate(zip(*columns, propensities, strict=True), start=1)
    ]  # fmt: skip


def outcome_table(entries: Iterable[StreamEntry]) -> pa.Table:
    """One row per outcome entry (``r`` request, ``p`` post, ``k`` kind ``i``/``c``), stamped
    with the time of its stream id; replays stay (readers treat outcomes as a set)."""
    rows = []
    for entry_id, entry in entries:
        try:
            rows.append({
                "timestamp": int(entry_id.split("-")[0]), "request_id": entry["r"],
                "post_id": entry["p"], "kind": entry["k"], "stream_id": entry_id,
            })  # fmt: skip
        except (KeyError, ValueError) as exc:
            log.error("leaving out unreadable outcome entry %s: %r", entry_id, exc)
    return pa.Table.from_pylist(rows, schema=OUTCOMES)
