"""The Open Bandit Dataset's CSV layout, as Open Bandit Pipeline's loader reads it.

``obp.dataset.OpenBanditDataset.load_raw_data`` reads ``<root>/<behavior_policy>/<campaign>/
<campaign>.csv`` and ``item_context.csv`` beside it with ``pandas.read_csv(path,
index_col=0)``, sorts by ``timestamp`` and takes ``item_id`` (integer actions, 0 to
n_actions - 1), ``position`` (dense-ranked from 0; the dataset ships 1, 2, 3), ``click`` (0/1)
and ``propensity_score``. So one directory per behaviour policy, campaign ``all``:

    <out>/<policy>/all/all.csv           ,timestamp,item_id,position,click,propensity_score,variant
    <out>/<policy>/all/item_context.csv  ,item_id,item_feature_0,post_id,forum_id

One row per shown post; ``position`` is the 1-based rank, ``timestamp`` as the dataset writes
it (``2019-11-24 00:03:13.442536+00:00``), ``propensity_score`` empty where unknown (with
``include_all`` only), ``variant`` empty outside an experiment. Item ids are the posts in
post id order, the same in every directory. ``item_feature_0`` is 0.0: OBP's default
preprocessing requires a numeric feature of that name and the log has none; it label-encodes
the other columns.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

CAMPAIGN = "all"
COLUMNS = ["", "timestamp", "item_id", "position", "click", "propensity_score", "variant"]
ITEM_COLUMNS = ["", "item_id", "item_feature_0", "post_id", "forum_id"]


def write(table: pa.Table, out: Path, include_all: bool = False) -> Counter[str]:
    """Write the joined rows of ``table`` (core.decision_files.read) under ``out``; rows without
    a propensity are left out unless ``include_all``. Returns the rows written per policy.

    Raises:
        OSError: ``out`` could not be written.
    """
    if not include_all:
        table = table.filter(pc.is_valid(table["propensity"]))
    rows = table.sort_by([("timestamp", "ascending"), ("request_id", "ascending"),
                          ("position", "ascending")]).to_pylist()  # fmt: skip
    forums = {row["post_id"]: row["forum_id"] for row in rows}
    item_ids = {post: index for index, post in enumerate(sorted(forums))}
    written: Counter[str] = Counter()
    for policy in sorted({row["policy"] for row in rows}):
        directory = out / policy / CAMPAIGN
        directory.mkdir(parents=True, exist_ok=True)
        chosen = [row for row in rows if row["policy"] == policy]
        _write_rows(directory / f"{CAMPAIGN}.csv", chosen, item_ids)
        _write_items(directory / "item_context.csv", item_ids, forums)
        written[policy] = len(chosen)
    return written


def _write_rows(path: Path, rows: list[dict[str, object]], item_ids: dict[str, int]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for index, row in enumerate(rows):
            propensity = row["propensity"]
            writer.writerow([
                index, row["timestamp"].isoformat(sep=" ", timespec="microseconds"),  # type: ignore[attr-defined]
                item_ids[str(row["post_id"])], row["position"], int(bool(row["click"])),
                "" if propensity is None else repr(propensity), row["variant"] or "",
            ])  # fmt: skip


def _write_items(path: Path, item_ids: dict[str, int], forums: dict[str, str]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(ITEM_COLUMNS)
        for post, item_id in item_ids.items():
            writer.writerow([item_id, item_id, 0.0, post, forums[post]])
