"""Security properties of the edge: the app token on event posts, and no caller-supplied string
ever becoming a metric label or a Redis key that lives forever."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.runtime import Runtime
from core.events import apply_batch
from core.metrics import METHODS
from core.storage import new_request_id
from tests.conftest import ADMIN, register

APP_TOKEN = "app-secret-token"
EVENT = {"request_id": "r1", "post_id": "p1"}


@pytest.fixture
def app_token_client(config: dict[str, Any]) -> Iterator[FlaskClient]:
    flask_app = create_app({**config, "BANDIT_APP_TOKEN": APP_TOKEN})
    yield flask_app.test_client()
    flask_app.extensions["postbandit"].snapshots.stop()


@pytest.mark.parametrize("path", ["/v1/impressions", "/v1/clicks"])
@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("", 401, "unauthorized"),
        ("Bearer", 401, "unauthorized"),
        (f"Basic {APP_TOKEN}", 401, "unauthorized"),
        ("Bearer wrong", 403, "forbidden"),
        (f"Bearer {APP_TOKEN}x", 403, "forbidden"),
        ("Bearer test-admin-token", 403, "forbidden"),  # the admin token is not the app token
        ("Bearer \u00e9t\u00e9", 403, "forbidden"),
        (f"Bearer {APP_TOKEN}", 202, None),
        (f"bearer {APP_TOKEN}", 202, None),
    ],
)
def test_event_posts_need_the_app_token_when_configured(
    app_token_client: FlaskClient, path: str, authorization: str | None, status: int, code: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = app_token_client.post(path, json={"events": [EVENT]}, headers=headers)
    assert response.status_code == status, response.json
    if code:
        assert response.json["error"]["code"] == code  # type: ignore[index]


def test_auth_is_checked_before_the_body(app_token_client: FlaskClient) -> None:
    response = app_token_client.post("/v1/clicks", data="not json")
    assert response.status_code == 401


def test_event_posts_are_open_without_an_app_token(client: FlaskClient) -> None:
    assert client.post("/v1/clicks", json={"events": [EVENT]}).status_code == 202


MARK = "zz9Marker"


def hostile_traffic(client: FlaskClient, rt: Runtime) -> None:
    """Requests whose every caller-chosen string carries MARK, through every endpoint."""
    for i in range(30):
        user = f"{MARK}-user-{i}"
        slate = client.get("/v1/recommendations", query_string={"user_id": user, "n": 3}).json
        assert slate is not None
        rid = slate["request_id"]
        events = [[rid, item["post_id"]] for item in slate["items"]]
        events += [[f"{MARK}-req-{i}", f"{MARK}-post-{i}"], [rid, f"{MARK}-post-{i}"]]
        events += [[new_request_id("old", time.time() - 7200), f"{MARK}-old-{i}"]]
        for kind in ("impression", "click"):
            body = {"events": [{"request_id": r, "post_id": p} for r, p in events]}
            assert client.post(f"/v1/{kind}s", json=body).status_code == 202
            apply_batch(rt.storage, kind, events, time.time(), 3600, 3600)
        client.get(f"/v1/posts/{MARK}-post-{i}")
        client.get(f"/v1/forums/{MARK}-forum-{i}")
        client.get(f"/{MARK}/path/{i}")
        client.open(f"/v1/posts/{MARK}-{i}", method="PROPFIND")
        client.get("/v1/recommendations", query_string={"user_id": "u", f"{MARK}{i}": "1"})


def test_no_caller_string_becomes_a_metric_label(
    app: Flask, client: FlaskClient, rt: Runtime
) -> None:
    for i in range(4):
        register(client, f"p{i}", "f")
    hostile_traffic(client, rt)
    exposition = client.get("/metrics").get_data(as_text=True)
    assert MARK not in exposition
    rules = {rule.rule for rule in app.url_map.iter_rules()} | {"unmatched"}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            assert labels.get("endpoint", "unmatched") in rules, sample
            assert labels.get("method", "GET") in METHODS | {"OTHER"}, sample
            assert labels.get("status", "200").isdigit(), sample


def test_caller_strings_only_create_keys_that_expire(
    client: FlaskClient, rt: Runtime, rclient: redis.Redis
) -> None:
    posts = [f"p{i}" for i in range(4)]
    for post in posts:
        register(client, post, "f")
    client.delete("/v1/posts/p3", headers=ADMIN)
    hostile_traffic(client, rt)
    keys = rt.storage.keys
    lasting = {k.decode() for k in rclient.scan_iter() if rclient.ttl(k) == -1}
    # The decision log's streams last too: they are capped by length (XADD MAXLEN), a shard
    # of the decisions for the member's tag and one a forum for their outcomes, listed in a set
    # of forum ids.
    decisions = {k for k in keys.decision_streams if rclient.exists(k)}
    assert decisions and decisions < set(keys.decision_streams)  # hostile members fill few
    decision_log = decisions | {keys.forum_outcomes("f"), keys.outcome_forums}
    # The journal of accepted batches lasts too: its entries are server-made batch ids, each
    # removed when a worker applied it (no worker runs here) or after the attribution window.
    journal = {k for pair in keys.journal_shards for k in pair if rclient.exists(k)}
    # Each forum's change log lasts like its live set: it only holds registered posts, and
    # forgets changes older than ten minutes whenever it grows. Its withdrawn posts wait in
    # `gone` until pruning removes their counts, one attribution window later.
    forum = {keys.live("f"), keys.stats("f"), keys.changes("f"), keys.gone("f")}
    assert lasting == {keys.forums, keys.withdrawn} | forum | decision_log | journal
    changed = {p.decode() for p in rclient.zrange(keys.changes("f"), 0, -1)}
    assert changed <= set(posts)
    batch_ids = {k.decode() for batches, _ in keys.journals for k in rclient.hkeys(batches)}
    assert len(batch_ids) == 60 and all(re.fullmatch("[0-9a-f]{32}", b) for b in batch_ids)
    fields = {f.decode() for f in rclient.hkeys(keys.stats("f"))}
    assert fields <= {"_i", "_c", "_wi", "_wc"} | {f"{kind}:{p}" for kind in "ic" for p in posts}
    assert "_i" in fields  # the traffic was counted
    assert any(MARK.encode() in k for k in rclient.scan_iter())  # and wrote expiring keys
