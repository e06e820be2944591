"""Request logs: one JSON line per recommendation and per event batch on stdout, level by config."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import create_app
from core.logs import configure
from core.settings import ConfigError, Settings
from tests.conftest import ADMIN, register

APP_TOKEN = "s3cret-app-token"
Make = Callable[..., FlaskClient]


@pytest.fixture
def make_client(capsys: pytest.CaptureFixture[str], config: dict[str, Any]) -> Iterator[Make]:
    """Build an app whose log handler writes to the captured stdout (capsys is active)."""
    apps = []

    def make(**overrides: str) -> FlaskClient:
        apps.append(create_app({**config, **overrides}))
        return apps[-1].test_client()

    yield make
    for flask_app in apps:
        flask_app.extensions["postbandit"].snapshots.stop()


def stdout_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Every line written to stdout; each must be one JSON object."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_one_line_per_recommendation(make_client: Make, capsys: pytest.CaptureFixture[str]) -> None:
    client = make_client()
    register(client, "p1", "f1")
    register(client, "p2", "f2")
    body = client.get("/v1/recommendations?user_id=alice&n=2").json
    assert body is not None
    [line] = [x for x in stdout_lines(capsys) if x["msg"] == "recommendation"]
    assert line["level"] == "info" and line["logger"] == "app.service"
    assert {k: line[k] for k in ("request_id", "user_id", "policy", "n", "degraded")} == {
        "request_id": body["request_id"], "user_id": "alice", "policy": "two_level_ts", "n": 2,
        "degraded": False,
    }  # fmt: skip
    assert line["items"] == [item["post_id"] for item in body["items"]]
    assert 0 < line["latency_ms"] < 5_000


def test_one_line_per_event_batch_and_no_secrets(
    make_client: Make, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(BANDIT_APP_TOKEN=APP_TOKEN)
    register(client, "p1", "f1")
    rid = client.get("/v1/recommendations?user_id=u").json["request_id"]  # type: ignore[index]
    events = {"events": [{"request_id": rid, "post_id": "p1"}] * 3}
    auth = {"Authorization": f"Bearer {APP_TOKEN}"}
    assert client.post("/v1/impressions", json=events, headers=auth).status_code == 202
    assert client.post("/v1/clicks", json=events, headers=ADMIN).status_code == 403
    out = capsys.readouterr().out
    batches = [json.loads(x) for x in out.splitlines() if '"events accepted"' in x]
    assert [(x["type"], x["events"]) for x in batches] == [("impression", 3)]
    assert APP_TOKEN not in out and ADMIN["Authorization"].split()[1] not in out


def test_log_level_is_configurable(make_client: Make, capsys: pytest.CaptureFixture[str]) -> None:
    client = make_client(BANDIT_LOG_LEVEL="warning")
    assert client.get("/v1/recommendations?user_id=u").status_code == 200
    assert stdout_lines(capsys) == []
    client = make_client(BANDIT_LOG_LEVEL="INFO")
    assert client.get("/v1/recommendations?user_id=u").status_code == 200
    assert [x["msg"] for x in stdout_lines(capsys)] == ["recommendation"]


def test_an_unknown_log_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="BANDIT_LOG_LEVEL"):
        Settings.from_mapping({"BANDIT_LOG_LEVEL": "chatty"})


def test_a_configured_process_still_formats_a_classic_format() -> None:
    """The records skip the caller's frame, but a %-format that asks for it, or for the
    process and thread, still formats."""
    configure("INFO")
    rec = logging.getLogger("x").makeRecord("x", logging.INFO, "f.py", 7, "hello", (), None)
    classic = logging.Formatter("%(process)d %(thread)d %(threadName)s %(lineno)d %(message)s")
    assert classic.format(rec).endswith(" 7 hello")
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logging.getLogger("y").addHandler(handler)
    try:
        logging.getLogger("y").warning("hi")
    finally:
        logging.getLogger("y").removeHandler(handler)
    text = logging.Formatter("%(process)d %(filename)s:%(lineno)d %(funcName)s %(message)s")
    assert text.format(captured[0]).endswith("(unknown file):0 (unknown function) hi")
