"""``export-decisions --format obd``: the Open Bandit Dataset's CSV layout, read back as Open
Bandit Pipeline reads it (obp/dataset/real.py, ``OpenBanditDataset.load_raw_data``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from flask import Flask
from scipy.stats import rankdata

from core.decision_files.store import Store
from core.storage import Storage
from tests.test_decision_files import POSTS, run, serve


def load_raw_data(root: Path, behavior_policy: str, campaign: str = "all") -> dict[str, Any]:
    """What OpenBanditDataset.load_raw_data reads, the same calls with the same arguments."""
    data_path = root / behavior_policy / campaign
    data = pd.read_csv(data_path / f"{campaign}.csv", index_col=0)
    item_context = pd.read_csv(data_path / "item_context.csv", index_col=0)
    with warnings.catch_warnings():  # OBP's call; pandas 3.1 deprecates ``inplace``
        warnings.simplefilter("ignore", pd.errors.Pandas4Warning)
        data.sort_values("timestamp", inplace=True)
    return {
        "data": data,
        "item_context": item_context,
        "action": data["item_id"].values,
        "position": (rankdata(data["position"].values, "dense") - 1).astype(int),
        "reward": data["click"].values,
        "pscore": data["propensity_score"].values,
    }


@pytest.fixture
def logged(app: Flask, rclient: redis.Redis, tmp_path: Path) -> dict[str, str]:
    """Two explore slates (with propensities, one in a variant) and one greedy slate, drained
    into the files that the app's settings name."""
    storage = Storage(rclient, "pb", decision_log_maxlen=1000)
    now = pd.Timestamp.now().timestamp()
    for post, forum in POSTS.items():
        storage.catalogue.put_post(post, forum, now, now + 3600, 60)
    chance = "[0.3333333333333333, 0.3333333333333333, 0.3333333333333333]"
    ids = {
        "explore": serve(storage, propensities=chance),
        "variant": serve(storage, "w", propensities=chance, variant="b", experiment="x"),
        "greedy": serve(storage, "v", policy="greedy"),
    }
    storage.counting.apply_events("c", [(ids["explore"], "p2", "f1")], 60)
    storage.counting.apply_events("i", [(ids["variant"], "p1", "f1")], 60)
    storage.counting.apply_events("c", [(ids["greedy"], "p3", "f2")], 60)
    run(storage, Store(str(tmp_path / "log")))
    return ids


def export(app: Flask, out: Path, *args: str) -> Any:
    return app.test_cli_runner().invoke(
        args=["export-decisions", "--format", "obd", "-o", str(out), "--since", "0", *args]
    )


@pytest.fixture
def app(config: dict[str, Any], tmp_path: Path) -> Any:
    from app import create_app

    flask_app = create_app({**config, "BANDIT_DECISION_LOG_URL": str(tmp_path / "log")})
    yield flask_app
    flask_app.extensions["postbandit"].snapshots.stop()


def test_open_bandit_pipeline_reads_the_export(
    app: Flask, logged: dict[str, str], tmp_path: Path
) -> None:
    result = export(app, tmp_path / "obd")
    assert result.exit_code == 0, result.output
    assert "exported 6 of 9 rows" in result.stderr
    raw = load_raw_data(tmp_path / "obd", "explore")
    data = raw["data"]
    assert list(data.columns) == ["timestamp", "item_id", "position", "click",
                                  "propensity_score", "variant"]  # fmt: skip
    assert [str(t) for t in data.dtypes[1:5]] == ["int64", "int64", "int64", "float64"]
    assert raw["action"].dtype == np.int64 and raw["pscore"].dtype == np.float64
    items = raw["item_context"]
    assert list(items.columns) == ["item_id", "item_feature_0", "post_id", "forum_id"]
    assert items["item_id"].tolist() == list(range(len(POSTS)))  # actions 0 to n - 1
    post_of = dict(zip(items["item_id"], items["post_id"], strict=True))
    variants = data["variant"].fillna("")
    rows = zip(raw["action"], raw["reward"], variants, strict=True)
    clicked = {(post_of[action], variant) for action, reward, variant in rows if reward}
    assert clicked == {("p2", "")}  # the impression of the variant's slate is no click
    assert sorted(raw["position"].tolist()) == [0, 0, 1, 1, 2, 2]  # positions 1-3, as OBD
    assert np.allclose(raw["pscore"], 1 / 3)
    assert sorted(data["variant"].fillna("").tolist()) == ["", "", "", "b", "b", "b"]
    assert pd.to_datetime(data["timestamp"]).dt.tz is not None
    assert [p.name for p in (tmp_path / "obd").iterdir()] == ["explore"]  # greedy: none known


def test_all_includes_the_rows_without_a_propensity(
    app: Flask, logged: dict[str, str], tmp_path: Path
) -> None:
    result = export(app, tmp_path / "obd", "--all")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "obd").iterdir()) == ["explore", "greedy"]
    raw = load_raw_data(tmp_path / "obd", "greedy")
    assert len(raw["data"]) == 3 and int(raw["reward"].sum()) == 1
    assert np.isnan(raw["pscore"]).all()  # empty: greedy knows no propensity
    greedy_items = load_raw_data(tmp_path / "obd", "greedy")["item_context"]
    assert greedy_items.equals(load_raw_data(tmp_path / "obd", "explore")["item_context"])


@pytest.mark.parametrize(
    ("args", "option"),
    [(["-o", "-"], "--output"), (["--log-url", "nosuch://x"], "--log-url"),
     (["--log-url", ""], "--log-url")],
)  # fmt: skip
def test_bad_obd_arguments_are_usage_errors(app: Flask, args: list[str], option: str) -> None:
    result = app.test_cli_runner().invoke(
        args=["export-decisions", "--format", "obd", "-o", "out", *args]
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
