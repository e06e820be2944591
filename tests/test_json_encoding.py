"""orjson on the request path: the log line, the response body and the decision-log entry hold
what the standard library's encoder wrote (fields, values, types), ASCII only, and a float that
is not finite becomes null instead of the invalid ``NaN``."""

from __future__ import annotations

import datetime
import json
import logging
import math
import sys
from typing import Any

import hypothesis
import numpy as np
import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from hypothesis import strategies as st

from app import decisions
from app.encoding import OrjsonProvider
from bandits import Slate
from core.logs import JsonFormatter, dumps

# Values the log line's extras may hold, with what the standard encoder (default=str) wrote.
AS_BEFORE: list[tuple[str, object]] = [
    ("float64", np.float64(0.1)),  # a float subclass: a number
    ("int64", np.int64(5)),  # not an int subclass: its str, "5"
    ("float32", np.float32(0.5)),
    ("bool_", np.bool_(True)),
    ("array", np.array([1.5, 2.0])),
    ("datetime", datetime.datetime(2026, 11, 29, 17, 0, tzinfo=datetime.UTC)),
    ("non-ASCII", "forum é ü"),
    ("astral", "post 😀"),
    ("nested", {"a": [1, 2.5, None, True], "b": {"c": "d"}}),
    ("big int", 2**70),  # past orjson's 64 bits: the standard encoder writes it
    ("int keys", {1: "one"}),  # orjson takes only string keys: the standard encoder does
    ("tuple", (1, "a")),
]


def record(**extra: Any) -> logging.LogRecord:
    return logging.getLogger("app.service").makeRecord(
        "app.service", logging.INFO, "f.py", 1, "recommendation", (), None, extra=extra
    )


@pytest.mark.parametrize(("name", "value"), AS_BEFORE, ids=[n for n, _ in AS_BEFORE])
def test_a_log_line_holds_what_the_standard_encoder_wrote(name: str, value: object) -> None:
    line = JsonFormatter().format(record(value=value, n=10))
    assert line.isascii() and "\n" not in line
    before = json.loads(json.dumps({"value": value}, default=str))["value"]
    parsed = json.loads(line)
    assert parsed["value"] == before and type(parsed["value"]) is type(before)
    assert (parsed["msg"], parsed["level"], parsed["logger"], parsed["n"]) == (
        "recommendation", "info", "app.service", 10,
    )  # fmt: skip


def test_non_ascii_is_escaped_as_the_standard_encoder_escapes_it() -> None:
    entry = {"msg": "é ü ✓ 😀 \u2028"}
    assert dumps(entry) == json.dumps(entry, separators=(",", ":"))


def test_a_float_that_is_not_finite_is_null_in_the_log_line() -> None:
    line = JsonFormatter().format(record(nan=math.nan, inf=np.float64(-math.inf), ok=1.5))
    parsed = json.loads(line, parse_constant=pytest.fail)  # NaN would not be JSON
    assert (parsed["nan"], parsed["inf"], parsed["ok"]) == (None, None, 1.5)


def test_a_log_line_keeps_the_exception() -> None:
    try:
        raise ValueError("broken é")
    except ValueError:
        rec = logging.getLogger("x").makeRecord("x", 40, "f", 1, "failed", (), sys.exc_info())
    parsed = json.loads(JsonFormatter().format(rec))
    assert "ValueError: broken é" in parsed["exc"] and parsed["msg"] == "failed"


# Text and numbers of every size (finite floats), nested as a log line's extras may be.
JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@hypothesis.settings(max_examples=300, database=None, deadline=None)
@hypothesis.given(st.dictionaries(st.text(), JSONABLE, max_size=6))
def test_any_entry_reads_back_as_the_standard_encoder_wrote_it(entry: dict[str, Any]) -> None:
    line = dumps(entry)
    assert line.isascii()
    assert json.loads(line) == json.loads(json.dumps(entry, default=str))


# ---- response bodies ---------------------------------------------------------------------


BODIES: list[object] = [
    {"request_id": "r1", "policy": "two_level_ts", "experiment": None, "variant": None,
     "items": [{"post_id": "p1", "forum_id": "f1", "rank": 1}], "degraded": False},
    {"error": {"code": "invalid_input", "message": "é: unknown query parameter", "field": "é"}},
    {"posterior": {"alpha": np.float64(1.5), "mean": 0.25, "interval95": [0.1, 0.9]}},
    {"z": 1, "a": [2**70]},  # past 64 bits: Flask's own provider
    [1, "two", None],
]  # fmt: skip


@pytest.mark.parametrize("body", BODIES)
def test_a_body_is_the_bytes_flasks_provider_wrote(app: Flask, body: object) -> None:
    with app.app_context():
        ours = app.json.response(body).get_data()
        theirs = DefaultJSONProvider(app).response(body).get_data()
    assert ours == theirs and ours.isascii() and ours.endswith(b"\n")


@hypothesis.settings(max_examples=300, database=None, deadline=None)
@hypothesis.given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_in_a_body_is_the_same_number(number: float) -> None:
    """Only its spelling may differ (``0.000015`` for ``1.5e-05``)."""
    bare = Flask(__name__)
    with bare.app_context():
        body = OrjsonProvider(bare).response({"mean": number}).get_data()
    assert json.loads(body)["mean"] == number


def test_the_providers_settings_still_apply(app: Flask) -> None:
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    with app.app_context():
        body = app.json.response({"b": "é", "a": 1}).get_data()
    assert body == '{"b":"é","a":1}\n'.encode()


def test_a_body_with_a_value_json_cannot_encode_is_an_error_as_before(app: Flask) -> None:
    with app.app_context(), pytest.raises(TypeError):
        app.json.response({"count": np.int64(3)})


def test_debug_mode_keeps_the_indented_bodies(app: Flask) -> None:
    app.debug = True
    with app.app_context():
        assert app.json.response({"b": 1, "a": 2}).get_data() == b'{\n  "a": 2,\n  "b": 1\n}\n'


def test_the_service_answers_with_the_provider(app: Flask) -> None:
    answer = app.test_client().get("/healthz")
    assert answer.get_data() == b'{"status":"ok"}\n'
    assert answer.mimetype == "application/json"


# ---- decision-log entries ----------------------------------------------------------------


def slate(scores: np.ndarray, propensities: np.ndarray | None = None) -> Slate:
    size = len(scores)
    return Slate(np.arange(size), scores, np.linspace(1, 2, size), np.linspace(3, 4, size),
                 "explore", eligible=7, propensities=propensities)  # fmt: skip


def loaded(entry: dict[Any, Any], name: str) -> Any:
    return json.loads(entry[name], parse_constant=pytest.fail)  # NaN would not be JSON


def items(size: int) -> list[dict[str, Any]]:
    return [{"post_id": f"p{i}", "forum_id": f"f{i % 2}", "rank": i + 1} for i in range(size)]


def test_a_decision_entry_holds_the_slates_exact_floats() -> None:
    scores = np.random.default_rng(3).random(10) ** 9  # small values: exponents in the text
    chosen = slate(scores, np.full(10, 1 / 7))
    entry = decisions.fields("r1", 1700000000.12345, "u1", chosen, items(10), "e1", "v1")
    for name, array in [("scores", scores), ("alpha", chosen.alpha), ("beta", chosen.beta),
                        ("propensities", chosen.propensities)]:  # fmt: skip
        assert array is not None and loaded(entry, name) == array.tolist()
    assert loaded(entry, "posts") == [f"p{i}" for i in range(10)]
    assert loaded(entry, "forums") == ["f0", "f1"] * 5
    assert (entry["time"], entry["candidates"], entry["experiment"]) == (1700000000.123, 7, "e1")


def test_a_decision_entry_takes_a_view_that_is_not_contiguous() -> None:
    scores = np.linspace(0, 1, 20)[::2]
    assert not scores.flags["C_CONTIGUOUS"]
    entry = decisions.fields("r1", 1.0, "u1", slate(scores), items(10))
    assert loaded(entry, "scores") == scores.tolist()
    assert "propensities" not in entry and "experiment" not in entry


def test_a_score_that_is_not_finite_is_null_in_the_decision_entry() -> None:
    scores = np.array([0.5, math.nan, math.inf])
    assert loaded(decisions.fields("r1", 1.0, "u1", slate(scores), items(3)), "scores") == [
        0.5, None, None,
    ]  # fmt: skip
