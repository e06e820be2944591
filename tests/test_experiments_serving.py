"""Serving an experiment: sticky variants, each variant's policy, the served slate and the
decision log carrying the arm, recent and explore as variants, the metric, and races."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.runtime import Runtime
from app.snapshot_file import SnapshotFile
from core.experiments.assignment import Allocation, assignment_bucket
from tests.conftest import ADMIN, register, written


def start(client: FlaskClient, experiment_id: str, variants: list[dict[str, Any]]) -> None:
    body = {"variants": variants, "control": variants[0]["name"]}
    answer = client.put(f"/v1/experiments/{experiment_id}", json=body, headers=ADMIN)
    assert answer.status_code == 201, answer.json


def slate(client: FlaskClient, user_id: str, n: int = 3, **query: Any) -> dict[str, Any]:
    answer = client.get("/v1/recommendations", query_string={"user_id": user_id, "n": n, **query})
    assert answer.status_code == 200, answer.json
    written(client)
    body: dict[str, Any] = answer.json
    return body


@pytest.fixture
def posts(client: FlaskClient) -> list[str]:
    """Twelve posts over three forums, created a minute apart (p11 the newest)."""
    ids = []
    for i in range(12):
        register(client, f"p{i}", f"f{i % 3}", created_at=minutes_ago(60 - i))
        ids.append(f"p{i}")
    return ids


def minutes_ago(minutes: int) -> str:
    moment = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)
    return moment.isoformat().replace("+00:00", "Z")


AB = [
    {"name": "a", "policy": "greedy", "weight": 3},
    {"name": "b", "policy": "random", "weight": 1},
]


def test_members_keep_their_variant_in_every_process_and_shares_follow_weights(
    client: FlaskClient, rt: Runtime, config: dict[str, Any], posts: list[str]
) -> None:
    start(client, "exp-ab", AB)
    rt.snapshots.refresh()
    other = create_app(config)
    try:
        second = other.test_client()
        allocation = Allocation.of([("a", 3), ("b", 1)])
        seen = Counter()
        for i in range(800):
            user = f"member-{i}"
            first = slate(client, user)
            assert first["experiment"] == "exp-ab"
            assert first["variant"] == allocation.assign("exp-ab", user)
            assert first["policy"] == {"a": "greedy", "b": "random"}[first["variant"]]
            assert slate(client, user)["variant"] == first["variant"]  # every request
            assert slate(second, user)["variant"] == first["variant"]  # every process
            seen[first["variant"]] += 1
    finally:
        other.extensions["postbandit"].snapshots.stop()
    # 800 members at 3:1: b ~ Binomial(800, 1/4), sd 12.2; five sd either side.
    assert abs(seen["b"] - 200) < 62, seen


def test_members_at_the_bucket_edges_get_the_variant_of_their_bucket(
    client: FlaskClient, rt: Runtime, posts: list[str]
) -> None:
    start(client, "edges", AB)
    rt.snapshots.refresh()
    ends = Allocation.of([("a", 3), ("b", 1)]).ends  # a: [0, 7500), b: [7500, 10000)
    wanted = {0: "a", ends[0] - 1: "a", ends[0]: "b", 9999: "b"}
    found: dict[int, str] = {}
    for i in itertools.count():
        user = f"u{i}"
        bucket = assignment_bucket("edges", user)
        if bucket in wanted and bucket not in found:
            found[bucket] = user
            if len(found) == len(wanted):
                break
    for bucket, user in found.items():
        assert slate(client, user)["variant"] == wanted[bucket], bucket


def test_the_served_slate_and_the_decision_log_carry_the_arm(
    client: FlaskClient, rt: Runtime, posts: list[str]
) -> None:
    start(client, "exp-x", [{"name": "ts", "policy": "two_level_ts", "weight": 1},
                            {"name": "x", "policy": "explore", "weight": 1}])  # fmt: skip
    rt.snapshots.refresh()
    by_variant: dict[str, dict[str, Any]] = {}
    for i in itertools.count():
        body = slate(client, f"m{i}", n=4)
        by_variant.setdefault(body["variant"], body)
        if len(by_variant) == 2:
            break
    served = rt.storage.serving.lookup([b["request_id"] for b in by_variant.values()])
    for name, body in by_variant.items():
        record = served[body["request_id"]]
        assert (record.experiment, record.variant, record.policy) == ("exp-x", name, body["policy"])
    entries = {e["request_id"]: e for _, e in rt.storage.decisions.read_decisions("-", "+", 100)}
    explored, sampled = (
        entries[by_variant["x"]["request_id"]],
        entries[by_variant["ts"]["request_id"]],
    )
    assert (explored["experiment"], explored["variant"], explored["policy"]) == (
        "exp-x", "x", "explore",
    )  # fmt: skip
    # Twelve eligible posts: each is at each slot with probability 1/12 exactly.
    assert json.loads(explored["propensities"]) == [1 / 12] * 4
    assert (sampled["experiment"], sampled["variant"]) == ("exp-x", "ts")
    assert "propensities" not in sampled


def test_explore_ignores_the_per_forum_cap(config: dict[str, Any], posts: list[str]) -> None:
    capped = create_app({**config, "BANDIT_PER_FORUM_CAP": "1"})
    try:
        client = capped.test_client()
        start(client, "cap", [{"name": "x", "policy": "explore", "weight": 1},
                              {"name": "y", "policy": "explore", "weight": 1}])  # fmt: skip
        slates = [slate(client, f"m{i}", n=6) for i in range(20)]
        assert {s["policy"] for s in slates} == {"explore"}
        forums_per_slate = [Counter(item["forum_id"] for item in s["items"]) for s in slates]
        # With the cap (1 a forum, 3 forums) a slate would hold 3 posts; explore takes 6.
        assert all(sum(c.values()) == 6 for c in forums_per_slate)
    finally:
        capped.extensions["postbandit"].snapshots.stop()


def test_recent_serves_the_newest_posts_first(
    client: FlaskClient, rt: Runtime, posts: list[str]
) -> None:
    start(client, "fresh", [{"name": "new", "policy": "recent", "weight": 1},
                            {"name": "also", "policy": "recent", "weight": 1}])  # fmt: skip
    rt.snapshots.refresh()
    assert [i["post_id"] for i in slate(client, "m", n=3)["items"]] == ["p11", "p10", "p9"]
    register(client, "p12", "f0", created_at=minutes_ago(1))
    rt.snapshots.refresh()  # an incremental read: the new post's creation time comes with it
    assert slate(client, "m", n=1)["items"][0]["post_id"] == "p12"
    assert slate(client, "m", n=2, forums="f1")["items"][0]["post_id"] == "p10"


def test_policies_are_built_once_per_change_not_per_refresh(
    client: FlaskClient, rt: Runtime, posts: list[str]
) -> None:
    rt.snapshots.refresh()
    outside = rt.snapshots.current().plan  # type: ignore[union-attr]
    start(client, "exp-ab", AB)
    rt.snapshots.refresh()
    plan = rt.snapshots.current().plan  # type: ignore[union-attr]
    assert plan is not outside and plan is not None and plan.experiment == "exp-ab"
    register(client, "p99", "f0")
    rt.snapshots.refresh()
    assert rt.snapshots.current().plan is plan  # type: ignore[union-attr]


def metric(client: FlaskClient, variant: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'postbandit_experiment_slates_total{{variant="{variant}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_slates_are_counted_by_variant(client: FlaskClient, rt: Runtime, posts: list[str]) -> None:
    before = {v: metric(client, v) for v in ("none", "a", "b")}
    slate(client, "someone")
    start(client, "exp-ab", AB)
    rt.snapshots.refresh()
    variants = Counter(slate(client, f"m{i}")["variant"] for i in range(40))
    after = {v: metric(client, v) for v in ("none", "a", "b")}
    assert after["none"] - before["none"] == 1
    assert {v: after[v] - before[v] for v in "ab"} == {v: variants[v] for v in "ab"}


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once (a barrier releases them together); their results."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


DEFINITION = json.dumps({"variants": AB, "control": "a"})


def test_starts_racing_start_one_experiment(rt: Runtime) -> None:
    experiments = rt.storage.experiments
    for round_ in range(20):
        ids = [f"r{round_}-{i}" for i in range(6)]
        results = race(*(lambda e=e: experiments.start(e, DEFINITION, 1.0) for e in ids))
        assert sorted(r for r, _ in results) == ["busy"] * 5 + ["created"]
        winner = ids[[r for r, _ in results].index("created")]
        assert {running for r, running in results if r == "busy"} == {winner}
        assert experiments.serving().experiment == winner
        assert experiments.stop(winner, 2.0, None, None) == "stopped"


def test_a_stop_racing_a_start_of_the_same_experiment_leaves_it_stopped(rt: Runtime) -> None:
    experiments = rt.storage.experiments
    for round_ in range(20):
        experiment_id = f"s{round_}"
        assert experiments.start(experiment_id, DEFINITION, 1.0)[0] == "created"
        put, stopped, stopped_again = race(
            lambda e=experiment_id: experiments.start(e, DEFINITION, 1.0),
            lambda e=experiment_id: experiments.stop(e, 2.0, None, None),
            lambda e=experiment_id: experiments.stop(e, 2.0, "a", {"policy": "greedy"}),
        )
        assert put[0] in ("same", "stopped")
        assert sorted([stopped, stopped_again]) == ["already_stopped", "stopped"]
        assert experiments.get(experiment_id).status == "stopped"  # type: ignore[union-attr]
        assert experiments.serving().experiment is None


def test_two_apps_racing_puts_through_the_api(app: Flask, config: dict[str, Any]) -> None:
    other = create_app(config)
    try:
        clients = [app.test_client(), other.test_client()]
        body = {"variants": AB, "control": "a"}
        answers = race(*(
            lambda c=c, e=e: c.put(f"/v1/experiments/{e}", json=body, headers=ADMIN).status_code
            for c, e in zip(clients, ("one", "two"), strict=True)
        ))  # fmt: skip
        assert sorted(answers) == [201, 409]
    finally:
        other.extensions["postbandit"].snapshots.stop()


def test_the_snapshot_file_keeps_the_creation_times(
    client: FlaskClient, rt: Runtime, posts: list[str], tmp_path: Any
) -> None:
    """A process that starts while Redis is down serves recent from the file as well."""
    snap = rt.snapshots.get()
    assert snap is not None and snap.candidates.post_created_at is not None
    file = SnapshotFile(tmp_path / "snapshot.npz")
    file.save(snap)
    loaded = file.load()
    assert loaded is not None and loaded.candidates.post_created_at is not None
    by_post = dict(zip(loaded.post_ids, loaded.candidates.post_created_at.tolist(), strict=True))
    assert by_post == {
        snap.post_ids[row]: created
        for row, created in zip(snap.rows.tolist(), snap.candidates.post_created_at.tolist(),
                                strict=True)
    }  # fmt: skip
    assert max(by_post, key=by_post.__getitem__) == "p11"
