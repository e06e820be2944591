"""The experiment API on a real Redis: definitions, their refusals, one experiment at a time,
stop and promote, and the bounded history."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.runtime import Runtime
from tests.conftest import ADMIN, register, written

TWO = {
    "variants": [
        {"name": "control", "policy": "two_level_ts", "weight": 1},
        {"name": "greedy", "policy": "greedy", "params": {"prior_strength": 4}, "weight": 1},
    ],
    "control": "control",
}


def put(client: FlaskClient, experiment_id: str, body: Any = TWO, **kw: Any) -> Any:
    return client.put(f"/v1/experiments/{experiment_id}", json=body, headers=ADMIN, **kw)


def stop(client: FlaskClient, experiment_id: str, body: Any = None) -> Any:
    if body is None:
        return client.post(f"/v1/experiments/{experiment_id}/stop", headers=ADMIN)
    return client.post(f"/v1/experiments/{experiment_id}/stop", json=body, headers=ADMIN)


def variant(name: str, policy: str = "random", weight: float = 1, **params: Any) -> dict[str, Any]:
    return {"name": name, "policy": policy, "params": params, "weight": weight}


def test_an_experiment_is_defined_started_read_and_listed(client: FlaskClient) -> None:
    created = put(client, "exp-1")
    assert created.status_code == 201, created.json
    view = created.json
    assert (view["experiment_id"], view["status"]) == ("exp-1", "running")
    assert view["control"] == "control"
    assert view["stopped_at"] is None and view["promoted"] is None
    # Parameters are stored as served: the configured value where none was given.
    assert [v["params"] for v in view["variants"]] == [
        {"prior_strength": 10.0, "exploration": 1.0},
        {"prior_strength": 4.0},
    ]
    assert client.get("/v1/experiments/exp-1").json == view
    listed = client.get("/v1/experiments").json
    assert listed["running"] == "exp-1"
    assert listed["experiments"] == [view]
    assert listed["default_policy"] == {
        "policy": "two_level_ts", "params": {"prior_strength": 10.0, "exploration": 1.0},
        "promoted": None,
    }  # fmt: skip


def test_the_same_definition_again_is_idempotent_another_is_a_conflict(
    client: FlaskClient,
) -> None:
    assert put(client, "exp-1").status_code == 201
    again = put(client, "exp-1")
    assert again.status_code == 200 and again.json["status"] == "running"
    changed = {**TWO, "variants": [TWO["variants"][0], variant("greedy", weight=2)]}
    refused = put(client, "exp-1", changed)
    assert (refused.status_code, refused.json["error"]["field"]) == (409, "variants")
    other = put(client, "exp-2")
    assert (other.status_code, other.json["error"]["field"]) == (409, "experiment_id")
    assert "exp-1 is running" in other.json["error"]["message"]
    assert client.get("/v1/experiments/exp-2").status_code == 404


def test_a_stopped_experiment_is_never_restarted_under_its_id(client: FlaskClient) -> None:
    assert put(client, "exp-1").status_code == 201
    stopped = stop(client, "exp-1")
    assert stopped.status_code == 200, stopped.json
    assert stopped.json["status"] == "stopped" and stopped.json["stopped_at"] is not None
    again = put(client, "exp-1")
    assert (again.status_code, again.json["error"]["field"]) == (409, "experiment_id")
    twice = stop(client, "exp-1")
    assert (twice.status_code, twice.json["error"]["field"]) == (409, "experiment_id")
    assert put(client, "exp-2").status_code == 201  # the next one may start
    assert [e["experiment_id"] for e in client.get("/v1/experiments").json["experiments"]] == [
        "exp-2", "exp-1",
    ]  # fmt: skip


NAN_BODY = json.dumps(TWO).replace('"weight": 1}', '"weight": NaN}', 1)
INVALID: list[tuple[str, Any, str]] = [
    ("unknown policy", {**TWO, "variants": [variant("a", "ucb"), variant("b")], "control": "a"},
     "variants[0].policy"),
    ("unknown parameter", {**TWO, "variants": [variant("a", epsilon=0.2), variant("b")],
                           "control": "a"}, "variants[0].params.epsilon"),
    ("parameter of another policy", {**TWO, "variants": [
        variant("a"), variant("b", "greedy", exploration=0.5)], "control": "a"},
     "variants[1].params.exploration"),
    ("parameter out of range", {**TWO, "variants": [
        variant("a"), variant("b", "two_level_ts", prior_strength=0)], "control": "a"},
     "variants[1].params.prior_strength"),
    ("parameter not a number", {**TWO, "variants": [
        variant("a"), variant("b", "greedy", prior_strength="4")], "control": "a"},
     "variants[1].params.prior_strength"),
    ("weight 0", {**TWO, "variants": [variant("a"), variant("b", weight=0)], "control": "a"},
     "variants[1].weight"),
    ("weight -1", {**TWO, "variants": [variant("a", weight=-1), variant("b")], "control": "a"},
     "variants[0].weight"),
    ("weight 1e308", {**TWO, "variants": [variant("a", weight=1e308), variant("b", weight=1e308)],
                      "control": "a"}, "variants[0].weight"),
    ("weight a string", {**TWO, "variants": [variant("a", weight="1"), variant("b")],
                         "control": "a"}, "variants[0].weight"),  # type: ignore[arg-type]
    ("weight true", {**TWO, "variants": [variant("a", weight=True), variant("b")],
                     "control": "a"}, "variants[0].weight"),
    ("weight too small to win members", {**TWO, "variants": [
        variant("a", weight=1_000_000), variant("b", weight=1)], "control": "a"},
     "variants[1].weight"),
    ("eleven variants", {"variants": [variant(f"v{i}") for i in range(11)], "control": "v0"},
     "variants"),
    ("one variant", {"variants": [variant("a")], "control": "a"}, "variants"),
    ("duplicate names", {"variants": [variant("a"), variant("b"), variant("a")], "control": "a"},
     "variants[2].name"),
    ("unknown control", {**TWO, "control": "treatment"}, "control"),
    ("the name of no variant", {"variants": [variant("a"), variant("none")], "control": "a"},
     "variants[1].name"),
    ("control not an id", {**TWO, "control": "a b"}, "control"),
    ("variant name not an id", {"variants": [variant("a/b"), variant("b")], "control": "b"},
     "variants[0].name"),
    ("unknown field", {**TWO, "variants": [{**variant("a"), "colour": 1}, variant("b")],
                       "control": "a"}, "variants[0].colour"),
    ("unknown top field", {**TWO, "start": True}, "start"),
    ("no variants", {"control": "a"}, "variants"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in INVALID],
                         ids=[name for name, _, _ in INVALID])  # fmt: skip
def test_bad_definitions_are_refused_naming_the_field(
    client: FlaskClient, body: Any, field: str
) -> None:
    answer = put(client, "exp-1", body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["field"] == field, answer.json
    assert answer.json["error"]["message"].startswith(field)
    assert client.get("/v1/experiments").json["running"] is None


def test_non_finite_weights_in_the_raw_json_are_refused(client: FlaskClient) -> None:
    for raw in (NAN_BODY, NAN_BODY.replace("NaN", "Infinity"), NAN_BODY.replace("NaN", "1e400")):
        answer = client.put("/v1/experiments/exp-1", data=raw, headers=ADMIN,
                            content_type="application/json")  # fmt: skip
        assert answer.status_code == 400, raw
        assert answer.json["error"]["field"] == "variants[0].weight"


@pytest.mark.parametrize("experiment_id", ["a b", "x" * 65, "é", "a%2Fb"])
def test_experiment_ids_outside_the_id_pattern_are_refused(
    client: FlaskClient, experiment_id: str
) -> None:
    answer = put(client, experiment_id)
    assert answer.status_code in (400, 404), answer.json
    if answer.status_code == 400:
        assert answer.json["error"]["field"] == "experiment_id"
    assert client.get("/v1/experiments").json["experiments"] == []


def test_writes_need_the_admin_token(client: FlaskClient) -> None:
    assert client.put("/v1/experiments/e", json=TWO).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.put("/v1/experiments/e", json=TWO, headers=wrong).status_code == 403
    assert put(client, "e").status_code == 201
    assert client.post("/v1/experiments/e/stop").status_code == 401
    assert client.post("/v1/experiments/e/stop", headers=wrong).status_code == 403
    assert client.get("/v1/experiments/e").json["status"] == "running"


def test_stopping_an_unknown_experiment_or_promoting_an_unknown_variant(
    client: FlaskClient,
) -> None:
    assert stop(client, "nope").status_code == 404
    assert put(client, "exp-1").status_code == 201
    answer = stop(client, "exp-1", {"promote": "treatment"})
    assert (answer.status_code, answer.json["error"]["field"]) == (400, "promote")
    assert "control, greedy" in answer.json["error"]["message"]
    assert stop(client, "exp-1", {"promote": "a b"}).status_code == 400
    assert stop(client, "exp-1", {"promote": "greedy", "x": 1}).status_code == 400
    assert client.get("/v1/experiments/exp-1").json["status"] == "running"


def recommend(client: FlaskClient, user_id: str = "alice") -> dict[str, Any]:
    answer = client.get("/v1/recommendations", query_string={"user_id": user_id, "n": 2})
    assert answer.status_code == 200, answer.json
    written(client)
    body: dict[str, Any] = answer.json
    return body


def test_promoting_a_variant_serves_its_policy_to_everyone_and_survives_a_restart(
    client: FlaskClient, rt: Runtime, config: dict[str, Any]
) -> None:
    register(client, "p1", "f1")
    assert put(client, "exp-1").status_code == 201
    stopped = stop(client, "exp-1", {"promote": "greedy"})
    assert (stopped.status_code, stopped.json["promoted"]) == (200, "greedy")
    listed = client.get("/v1/experiments").json
    assert listed["running"] is None
    assert listed["default_policy"] == {
        "policy": "greedy", "params": {"prior_strength": 4.0},
        "promoted": {"experiment": "exp-1", "variant": "greedy"},
    }  # fmt: skip
    assert rt.snapshots.refresh()
    for user in ("alice", "bob", "carol"):
        slate = recommend(client, user)
        assert (slate["policy"], slate["experiment"], slate["variant"]) == ("greedy", None, None)
    assert rt.snapshots.current().plan.default.policy.prior_strength == 4.0  # type: ignore[union-attr]
    restarted = create_app(config)
    try:
        assert recommend(restarted.test_client())["policy"] == "greedy"
    finally:
        restarted.extensions["postbandit"].snapshots.stop()


def test_stopping_without_promote_returns_to_the_configured_policy(
    client: FlaskClient, rt: Runtime
) -> None:
    register(client, "p1", "f1")
    assert put(client, "exp-1").status_code == 201
    assert stop(client, "exp-1", {"promote": "greedy"}).status_code == 200
    body = {"variants": [variant("a", "random"), variant("b", "flat_ts")], "control": "a"}
    assert put(client, "exp-2", body).status_code == 201
    assert rt.snapshots.refresh()
    assert recommend(client)["experiment"] == "exp-2"
    assert stop(client, "exp-2").json["promoted"] is None  # no body: nothing promoted
    assert client.get("/v1/experiments").json["default_policy"]["promoted"] is None
    assert rt.snapshots.refresh()
    assert recommend(client)["policy"] == "two_level_ts"


def test_the_history_keeps_the_last_100_and_ids_are_never_reused(client: FlaskClient) -> None:
    for i in range(101):
        assert put(client, f"e{i}").status_code == 201
        assert stop(client, f"e{i}").status_code == 200
    listed = client.get("/v1/experiments").json["experiments"]
    assert [e["experiment_id"] for e in listed] == [f"e{i}" for i in range(100, 0, -1)]
    assert client.get("/v1/experiments/e0").status_code == 404
    assert put(client, "e0").status_code == 409


def test_a_second_web_process_serves_the_change_within_its_refresh(
    config: dict[str, Any], app: Flask
) -> None:
    """Two Flask apps on one Redis, refreshing every 50 ms: the other one serves the
    experiment, and later the stop, without being told."""
    client = app.test_client()
    register(client, "p1", "f1")
    other = create_app({**config, "BANDIT_REFRESH_SECONDS": "0.05"})
    try:
        watcher = other.test_client()
        assert recommend(watcher)["experiment"] is None
        assert put(client, "exp-1").status_code == 201
        wait_for(lambda: recommend(watcher)["experiment"] == "exp-1")
        assert stop(client, "exp-1").status_code == 200
        wait_for(lambda: recommend(watcher)["experiment"] is None)
    finally:
        other.extensions["postbandit"].snapshots.stop()


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    """Until ``condition()`` holds: polled, the deadline only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        threading.Event().wait(0.01)
