"""The decision log: served slates in a capped stream, joined with outcomes, exported as JSONL."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import decisions
from app.runtime import Runtime
from bandits import Slate
from core.events import apply_batch
from core.storage import Served, Storage, new_request_id
from core.storage.decision_log import stream_id
from core.storage.keys import DECISION_SHARDS, decision_shard
from tests.conftest import register, written

FORUMS = {"maths": 4, "physics": 3, "jobs": 2}
WINDOW = 86_400


@pytest.fixture
def catalogue(client: FlaskClient) -> None:
    for forum, count in FORUMS.items():
        for i in range(count):
            register(client, f"{forum}-{i}", forum)


def recommend(client: FlaskClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/recommendations", query_string={"user_id": "u1", **params})
    assert response.status_code == 200, response.json
    written(client)
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def logged(rt: Runtime) -> list[dict[str, str]]:
    return [entry for _, entry in rt.storage.decisions.read_decisions("-", "+", 1000)]


def events(rt: Runtime, event_type: str, pairs: list[tuple[str, str]]) -> dict[str, int]:
    outcome = apply_batch(rt.storage, event_type, [list(p) for p in pairs], time.time(),
                          WINDOW, WINDOW)  # fmt: skip
    return dict(outcome.results)


def export(rt: Runtime, now: float | None = None) -> tuple[list[dict[str, Any]], Any]:
    out = io.StringIO()
    now = time.time() if now is None else now
    summary = decisions.export(rt.storage.decisions, now - 3600, now, WINDOW, now, out)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def test_every_served_slate_is_logged_with_scores_and_posteriors(
    client: FlaskClient, rt: Runtime, catalogue: None
) -> None:
    before = time.time()
    body = recommend(client, n=4, forums="maths,physics", exclude="maths-0")
    after = time.time()
    [entry] = logged(rt)
    assert entry["request_id"] == body["request_id"]
    assert (entry["user_id"], entry["policy"]) == ("u1", "two_level_ts")
    assert int(entry["candidates"]) == 6  # 4 + 3 posts in the two forums, one excluded
    assert round(before, 3) <= float(entry["time"]) <= round(after, 3)  # stored to the ms
    assert json.loads(entry["posts"]) == [i["post_id"] for i in body["items"]]
    assert json.loads(entry["forums"]) == [i["forum_id"] for i in body["items"]]
    scores = json.loads(entry["scores"])
    assert len(scores) == 4 and all(0 <= s <= 1 for s in scores)
    alpha, beta = json.loads(entry["alpha"]), json.loads(entry["beta"])
    assert len(alpha) == len(beta) == 4 and min(alpha + beta) > 0
    # two_level_ts puts the sampled slate in order of posterior mean (bandits.policies).
    means = [a / (a + b) for a, b in zip(alpha, beta, strict=True)]
    assert means == sorted(means, reverse=True)


def test_empty_slates_are_not_logged(client: FlaskClient, rt: Runtime, catalogue: None) -> None:
    assert recommend(client, forums="nosuchforum")["items"] == []
    assert logged(rt) == []


def test_export_joins_each_decision_with_its_impressions_and_clicks(
    client: FlaskClient, rt: Runtime, catalogue: None
) -> None:
    first, second = recommend(client, n=3), recommend(client, n=2)
    a, b, c = (item["post_id"] for item in first["items"])
    rid = first["request_id"]
    events(rt, "impression", [(rid, a), (rid, a)])  # a duplicate changes nothing
    events(rt, "click", [(rid, b)])  # a click counts its impression too
    events(rt, "impression", [(rid, "jobs-99")])  # not served: not an outcome

    records, summary = export(rt)
    assert (summary.decisions, summary.final, summary.outcomes_trimmed) == (2, 0, False)
    by_id = {r["request_id"]: r for r in records}
    outcomes = {i["post_id"]: (i["impression"], i["click"]) for i in by_id[rid]["items"]}
    assert outcomes == {a: (True, False), b: (True, True), c: (False, False)}
    assert [i["rank"] for i in by_id[rid]["items"]] == [1, 2, 3]
    assert not any(i["impression"] for i in by_id[second["request_id"]]["items"])
    assert set(by_id[rid]) == {"request_id", "time", "user_id", "policy", "experiment",
                               "variant", "candidates", "final", "items"}  # fmt: skip
    assert (by_id[rid]["experiment"], by_id[rid]["variant"]) == (None, None)
    assert set(by_id[rid]["items"][0]) == {"rank", "post_id", "forum_id", "score", "alpha",
                                           "beta", "propensity", "impression",
                                           "click"}  # fmt: skip
    assert by_id[rid]["items"][0]["propensity"] is None

    later, _ = export(rt, now=time.time() + WINDOW + 1)
    assert later == []  # outside --since/--until
    out = io.StringIO()
    summary = decisions.export(
        rt.storage.decisions, 0, time.time(), WINDOW, time.time() + WINDOW + 1, out
    )
    assert summary.final == 2  # the attribution windows have closed


def test_export_cli_writes_json_lines(
    app: Flask, client: FlaskClient, rt: Runtime, catalogue: None
) -> None:
    body = recommend(client, n=2)
    events(rt, "click", [(body["request_id"], body["items"][0]["post_id"])])
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 60))
    result = app.test_cli_runner().invoke(args=["export-decisions", "--since", since])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["request_id"] == body["request_id"] and line["items"][0]["click"] is True
    assert "exported 1 decisions (0 final)" in result.stderr

    future = app.test_cli_runner().invoke(args=["export-decisions", "--since", str(time.time())])
    assert future.exit_code == 0 and future.stdout == ""


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", ""])
def test_export_cli_refuses_a_bad_time(app: Flask, value: str) -> None:
    result = app.test_cli_runner().invoke(args=["export-decisions", "--since", value])
    assert result.exit_code == 2
    assert "neither unix seconds nor an ISO 8601 date-time" in result.output


def test_streams_are_capped_and_keep_every_outcome_of_the_kept_decisions(
    rclient: redis.Redis,
) -> None:
    storage = Storage(rclient, "pb", decision_log_maxlen=50)
    now = time.time()
    posts = {f"p{i}": "f" for i in range(10)}
    for post in posts:
        storage.catalogue.put_post(post, "f", now, now + 3600, 60)
    request_ids = []
    for _ in range(300):
        served = Served(new_request_id("u"), "u", "random", posts)
        storage.serving.serve(served, 60, {"request_id": served.request_id})
        for kind in ("i", "c"):  # an impression and a click of every post of the slate
            events = [(served.request_id, post, "f") for post in posts]
            assert storage.counting.apply_events(kind, events, 60) == [1] * 10  # each counted
        request_ids.append(served.request_id)
    # One member's decisions share its shard, capped at its share of the 50 (4): XADD MAXLEN ~
    # trims whole stream nodes (100 entries each), never below the cap.
    assert storage.decisions.shard_cap == 4
    assert 4 <= storage.decisions.kept() <= 104
    kept = Counter(entry["r"] for _, entry in outcomes(storage, 100_000))
    assert kept[request_ids[0]] == 0  # the outcome stream is capped too
    assert [kept[r] for r in request_ids[-50:]] == [20] * 50  # but not below the kept decisions


def test_a_trimmed_outcome_stream_is_reported(rclient: redis.Redis) -> None:
    storage = Storage(rclient, "pb", decision_log_maxlen=1)  # keeps ~20 outcomes
    since = time.time() - 1
    storage.catalogue.put_post("p", "f", time.time(), time.time() + 3600, 60)
    for _ in range(300):
        rid = new_request_id("u")
        storage.serving.serve(Served(rid, "u", "random", {"p": "f"}), 60)
        storage.counting.apply_events("i", [(rid, "p", "f")], 60)
    summary = decisions.export(
        storage.decisions, since, time.time(), 60, time.time(), io.StringIO()
    )
    assert summary.outcomes_trimmed is True


def outcomes(storage: Storage, count: int) -> list[tuple[str, dict[str, str]]]:
    """Every outcome-stream entry, of every forum."""
    log = storage.decisions
    return [e for s in log.outcome_streams() for e in log.read_outcomes(s, "-", "+", count)]


def test_only_events_that_count_are_appended_in_their_forums_stream(
    rclient: redis.Redis,
) -> None:
    storage = Storage(rclient, "pb", decision_log_maxlen=10)
    storage.catalogue.put_post("p", "f", time.time(), time.time() + 3600, 60)
    storage.catalogue.put_post("q", "g", time.time(), time.time() + 3600, 60)
    rid = new_request_id("u")
    storage.serving.serve(Served(rid, "u", "random", {"p": "f", "q": "g"}), 60)
    assert storage.counting.apply_events("c", [(rid, "p", "f"), (rid, "q", "g")], 60) == [2, 2]
    for kind in ("c", "i"):  # replayed: duplicates append nothing
        assert storage.counting.apply_events(kind, [(rid, "p", "f")], 60) == [0]
    by_stream = {s: [e for _, e in storage.decisions.read_outcomes(s, "-", "+", 10)]
                 for s in storage.decisions.outcome_streams()}  # fmt: skip
    assert by_stream == {
        storage.keys.outcomes: [],
        storage.keys.forum_outcomes("f"): [{"r": rid, "p": "p", "k": "c"}],
        storage.keys.forum_outcomes("g"): [{"r": rid, "p": "q", "k": "c"}],
    }


def one_post_slate(post_id: str, forum_id: str) -> tuple[Slate, list[dict[str, Any]]]:
    one = np.ones(1)
    slate = Slate(np.zeros(1, dtype=np.int64), one / 2, one, one, "random", eligible=1)
    return slate, [{"post_id": post_id, "forum_id": forum_id, "rank": 1}]


def test_replaying_one_slates_events_keeps_every_other_decisions_outcomes(
    rclient: redis.Redis,
) -> None:
    """Anyone may post events: thousands of replays of one slate's events must not push other
    decisions' outcomes out of the capped streams (the export would report them unseen)."""
    storage = Storage(rclient, "pb", decision_log_maxlen=5)  # outcome streams of ~100 each
    now = time.time()
    storage.catalogue.put_post("p", "f", now, now + 3600, 60)
    served = [Served(new_request_id("u"), "u", "random", {"p": "f"}) for _ in range(5)]
    for slate in served:
        storage.serving.serve(
            slate, 60, decisions.fields(slate.request_id, now, "u", *one_post_slate("p", "f"))
        )
        apply_batch(storage, "click", [[slate.request_id, "p"]], time.time(), 60, 60)
    replay = [[served[0].request_id, "p"]] * 1000
    for _ in range(3):
        for kind in ("impression", "click"):
            assert apply_batch(storage, kind, replay, time.time(), 60, 60).results == {
                "duplicate": 1000
            }
    out = io.StringIO()
    decisions.export(storage.decisions, now - 60, time.time(), 60, time.time(), out)
    items = [json.loads(line)["items"][0] for line in out.getvalue().splitlines()]
    assert [(i["impression"], i["click"]) for i in items] == [(True, True)] * 5


def test_decision_log_off(config: dict[str, Any], rclient: redis.Redis) -> None:
    from app import create_app

    flask_app = create_app({**config, "BANDIT_DECISION_LOG_MAXLEN": "0"})
    try:
        test_client = flask_app.test_client()
        register(test_client, "p1", "f1")
        body = recommend(test_client)
        assert len(body["items"]) == 1
        rt: Runtime = flask_app.extensions["postbandit"]
        events(rt, "impression", [(body["request_id"], "p1")])
        assert not rclient.exists(*rt.storage.keys.decision_streams, rt.storage.keys.outcomes)
    finally:
        flask_app.extensions["postbandit"].snapshots.stop()


def test_decisions_spread_over_the_shards_under_one_total_cap(rclient: redis.Redis) -> None:
    storage = Storage(rclient, "pb", decision_log_maxlen=100 * DECISION_SHARDS)
    assert storage.decisions.shard_cap == 100
    pipe = rclient.pipeline(transaction=False)
    for i in range(5000):
        storage.decisions.queue_decision(pipe, f"member{i}", {"request_id": str(i)})
    pipe.execute()
    lengths = [rclient.xlen(s) for s in storage.keys.decision_streams]
    assert lengths[-1] == 0 and all(lengths[:-1])  # every shard written, the old stream not
    # Each shard is trimmed by whole stream nodes (100 entries), never below its cap.
    assert 100 * DECISION_SHARDS <= sum(lengths) <= 200 * DECISION_SHARDS < 5000


def test_the_readers_merge_the_shards_and_the_old_stream_in_id_order(
    rclient: redis.Redis,
) -> None:
    """The export and the drain read every shard and the stream of releases before them, in
    id order, across pages, even where ids of different shards are equal."""
    storage = Storage(rclient, "pb", decision_log_maxlen=1000)
    keys, entries = storage.keys, []
    rclient.xadd(keys.legacy_decisions, {"request_id": "old"}, id="1000-0")
    for i in range(60):
        member = f"m{i % 7}"
        entry_id = f"{2000 + i // 3}-{i % 2}"  # collisions across members' shards
        stream = keys.decisions(decision_shard(member))
        try:
            rclient.xadd(stream, {"request_id": f"r{i}", "user_id": member}, id=entry_id)
        except redis.ResponseError:  # this shard already holds that id
            continue
        entries.append((stream_id(entry_id), f"r{i}"))
    read, start, seen = storage.decisions.read_decisions, "-", []
    while page := read(start, "+", 4):
        seen += [(stream_id(i), e["request_id"]) for i, e in page]
        start = f"({page[-1][0]}"
    assert seen[0] == ((1000, 0), "old")
    assert sorted(seen[1:]) == sorted(entries) and [i for i, _ in seen] == sorted(
        i for i, _ in seen
    )
    assert len({decision_shard(f"m{m}") for m in range(7)}) > 1
