"""Tables of invalid requests for every endpoint: each a 4xx in the one error shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.openapi import OPERATIONS
from app.schemas import MAX_CLOCK_SKEW_SECONDS
from tests.conftest import ADMIN, register

WRONG = {"Authorization": "Bearer not-the-token"}
EVENT = {"request_id": "r1", "post_id": "p1"}
RFC3339 = "RFC 3339 date-time with a timezone"
FUTURE = "seconds in the future"


def check_error(response: Any, status: int, field: str | None, text: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.json["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["field"] == field
    assert text in error["message"]


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({}, "user_id", "Field required"),
        ({"user_id": ""}, "user_id", "at least 1 character"),
        ({"user_id": "x" * 65}, "user_id", "at most 64 characters"),
        ({"user_id": "a b"}, "user_id", "should match pattern"),
        ({"user_id": "u{1}"}, "user_id", "should match pattern"),
        ({"user_id": "u", "n": "0"}, "n", "greater than or equal to 1"),
        ({"user_id": "u", "n": "51"}, "n", "less than or equal to 50"),
        ({"user_id": "u", "n": "ten"}, "n", "valid integer"),
        (
            {"user_id": "u", "forums": ",".join(f"f{i}" for i in range(101))},
            "forums",
            "at most 100 items",
        ),
        (
            {"user_id": "u", "exclude": ",".join(f"p{i}" for i in range(501))},
            "exclude",
            "at most 500 items",
        ),
        ({"user_id": "u", "forums": "ok,b@d"}, "forums[1]", "should match pattern"),
        ({"user_id": "u", "forums": "a,,b"}, "forums[1]", "at least 1 character"),
        ({"user_id": "u", "forums": ","}, "forums[0]", "at least 1 character"),
        ({"user_id": "u", "exclude": ""}, "exclude[0]", "at least 1 character"),
        ({"user_id": "u", "colour": "red"}, "colour", "unknown query parameter"),
        ({"user_id": ["u", "v"]}, "user_id", "given more than once"),
        ({"user_id": "u", "n": ["1", "2"]}, "n", "given more than once"),
        ({"user_id": "u", "n": "1.5"}, "n", "valid integer"),
        ({"user_id": "u", "n": "true"}, "n", "valid integer"),
        # Only ASCII digits are an integer, as the OpenAPI document says:
        ({"user_id": "u", "n": "1.0"}, "n", "valid integer"),
        ({"user_id": "u", "n": "5_0"}, "n", "valid integer"),
        ({"user_id": "u", "n": " 5"}, "n", "valid integer"),
        ({"user_id": "u", "n": "5\n"}, "n", "valid integer"),
        ({"user_id": "u", "n": "+5"}, "n", "valid integer"),
        ({"user_id": "u", "n": "\u0665"}, "n", "valid integer"),
        ({"user_id": "u\u00e9"}, "user_id", "should match pattern"),
        ({"user_id": "u\n"}, "user_id", "should match pattern"),
    ],
)
def test_recommendations_rejects(
    client: FlaskClient, params: dict[str, Any], field: str, text: str
) -> None:
    check_error(client.get("/v1/recommendations", query_string=params), 400, field, text)


LONG = ["x" * 64]


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({}, "user_id", "Field required"),
        ({"user_id": 7}, "user_id", "valid string"),
        ({"user_id": "u", "n": "5"}, "n", "valid integer"),
        ({"user_id": "u", "n": 5.5}, "n", "valid integer"),
        ({"user_id": "u", "n": True}, "n", "valid integer"),
        ({"user_id": "u", "n": None}, "n", "valid integer"),
        ({"user_id": "u", "n": 0}, "n", "greater than or equal to 1"),
        ({"user_id": "u", "n": 51}, "n", "less than or equal to 50"),
        ({"user_id": "u", "n": 1e300}, "n", "less than or equal to 50"),
        ({"user_id": "u", "forums": []}, "forums", "at least 1 item"),
        ({"user_id": "u", "forums": "a,b"}, "forums", "valid array"),
        ({"user_id": "u", "forums": LONG * 101}, "forums", "at most 100 items"),
        ({"user_id": "u", "exclude": LONG * 501}, "exclude", "at most 500 items"),
        ({"user_id": "u", "exclude": ["ok", ""]}, "exclude[1]", "at least 1 character"),
        ({"user_id": "u", "exclude": ["x" * 65]}, "exclude[0]", "at most 64 characters"),
        ({"user_id": "u", "exclude": [1]}, "exclude[0]", "valid string"),
        ({"user_id": "u", "exclude": None}, "exclude", "valid array"),
        ({"user_id": "u", "colour": "red"}, "colour", "unknown field"),
        (["u"], "body", "JSON object"),
    ],
)
def test_recommendations_body_rejects(
    client: FlaskClient, body: Any, field: str, text: str
) -> None:
    check_error(client.post("/v1/recommendations", json=body), 400, field, text)


def test_recommendations_body_must_be_json(client: FlaskClient) -> None:
    response = client.post("/v1/recommendations", data="user_id=u")
    check_error(response, 400, "body", "must be JSON")
    response = client.post("/v1/recommendations?user_id=u", json={"user_id": "u"})
    check_error(response, 400, "user_id", "unknown query parameter")


@pytest.mark.parametrize("path", ["/v1/impressions", "/v1/clicks"])
@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({}, "events", "Field required"),
        ({"events": []}, "events", "at least 1 item"),
        ({"events": [EVENT] * 1001}, "events", "at most 1000 items"),
        ({"events": "r1"}, "events", "valid array"),
        ({"events": [EVENT, {"request_id": "r2"}]}, "events[1].post_id", "Field required"),
        ({"events": [EVENT, EVENT, {**EVENT, "post_id": 7}]}, "events[2].post_id", "valid string"),
        ({"events": [{**EVENT, "post_id": "p" * 65}]}, "events[0].post_id", "at most 64"),
        ({"events": [{**EVENT, "extra": 1}]}, "events[0].extra", "unknown field"),
        ({"events": [{**EVENT, "request_id": "r 1"}]}, "events[0].request_id", "match pattern"),
        # An event that is not an object is named, not taken for the body.
        ({"events": [EVENT, 7]}, "events[1]", "should be an object"),
        ({"events": [EVENT, [EVENT]]}, "events[1]", "should be an object"),
        ({"events": [EVENT], "more": 1}, "more", "unknown field"),
        ([EVENT], "body", "JSON object"),
    ],
)
def test_events_reject(client: FlaskClient, path: str, body: Any, field: str, text: str) -> None:
    check_error(client.post(path, json=body), 400, field, text)


@pytest.mark.parametrize("path", ["/v1/impressions", "/v1/clicks"])
def test_events_reject_non_json(client: FlaskClient, path: str) -> None:
    check_error(client.post(path, data="events=1"), 400, "body", "must be JSON")
    check_error(
        client.post(path, data="{not json", content_type="application/json"),
        400,
        "body",
        "Invalid JSON",
    )


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "recursion limit exceeded"),
        (b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "recursion limit exceeded"),
        (b"", "EOF while parsing"),
        (b"\xff\xfe{", "expected value"),
        (b'"events"', "must be a JSON object"),
        (b'{"events": [{"request_id": "\\ud800", "post_id": "p"}]}', "Invalid JSON"),
    ],
)
def test_events_reject_malformed_json(client: FlaskClient, body: bytes, text: str) -> None:
    response = client.post("/v1/clicks", data=body, content_type="application/json")
    check_error(response, 400, "body", text)


def test_oversized_body_is_413(client: FlaskClient) -> None:
    body = b'{"events": [' + b" " * (600 * 1024) + b"]}"
    response = client.post("/v1/clicks", data=body, content_type="application/json")
    check_error(response, 413, "body", "larger than the limit of 524288 bytes")


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({}, "forum_id", "Field required"),
        ({"forum_id": "f", "ttl_seconds": 59}, "ttl_seconds", "greater than or equal to 60"),
        ({"forum_id": "f", "ttl_seconds": 2_592_001}, "ttl_seconds", "less than or equal to"),
        ({"forum_id": "f", "created_at": "yesterday"}, "created_at", RFC3339),
        ({"forum_id": "f f"}, "forum_id", "should match pattern"),
        ({"forum_id": "f", "title": "x"}, "title", "unknown field"),
        # JSON types as the OpenAPI document states them, nothing coerced:
        ({"forum_id": 7}, "forum_id", "valid string"),
        ({"forum_id": "f", "ttl_seconds": "3600"}, "ttl_seconds", "valid integer"),
        ({"forum_id": "f", "ttl_seconds": 3600.5}, "ttl_seconds", "valid integer"),
        ({"forum_id": "f", "ttl_seconds": True}, "ttl_seconds", "valid integer"),
        ({"forum_id": "f", "ttl_seconds": 10**30}, "ttl_seconds", "less than or equal to"),
        ({"forum_id": "f", "ttl_seconds": 1e30}, "ttl_seconds", "less than or equal to"),
        ({"forum_id": "f", "created_at": 1700000000}, "created_at", "valid datetime"),
        ({"forum_id": "f", "created_at": True}, "created_at", "valid datetime"),
        ({"forum_id": "f", "created_at": "1700000000"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-11-29"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-11-29T10:00:00"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-11-29T10:00Z"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-11-29 10:00:00Z"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-11-29T10:00:00+0100"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-11-29T10:00:00Z\n"}, "created_at", RFC3339),
        ({"forum_id": "f", "created_at": "2026-02-30T10:00:00Z"}, "created_at", "valid datetime"),
        ({"forum_id": "f", "created_at": "2100-01-01T00:00:00Z"}, "created_at", FUTURE),
        ({"forum_id": "f", "created_at": "9999-12-31T23:59:59-23:59"}, "created_at", FUTURE),
    ],
)
def test_put_post_rejects(client: FlaskClient, body: dict[str, Any], field: str, text: str) -> None:
    check_error(client.put("/v1/posts/p1", json=body, headers=ADMIN), 400, field, text)


@pytest.mark.parametrize("ttl", [b"3600.0", b"36e2", b"3.6E3"])
def test_ttl_seconds_is_any_json_integer(client: FlaskClient, ttl: bytes) -> None:
    """JSON Schema, and so the OpenAPI document, calls a number without a fraction an integer."""
    body = b'{"forum_id": "f", "ttl_seconds": ' + ttl + b"}"
    response = client.put("/v1/posts/p1", data=body, headers=ADMIN,
                          content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.json
    assert response.json["expires_at"] - response.json["created_at"] == 3600  # type: ignore[index]


@pytest.mark.parametrize("body", [b"null", b"[]", b'"p"', b"{", b"{}x"])
def test_put_post_rejects_a_body_that_is_not_one_object(client: FlaskClient, body: bytes) -> None:
    response = client.put("/v1/posts/p1", data=body, headers=ADMIN,
                          content_type="application/json")  # fmt: skip
    check_error(response, 400, "body", "")


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def test_created_at_may_be_ahead_by_the_clock_skew_but_no_more(client: FlaskClient) -> None:
    now = time.time()
    ahead = client.put("/v1/posts/p1", json={"forum_id": "f", "created_at": iso(now + 60)},
                       headers=ADMIN)  # fmt: skip
    assert ahead.status_code == 201, ahead.json
    assert ahead.json["created_at"] == pytest.approx(now + 60)  # type: ignore[index]
    later = now + MAX_CLOCK_SKEW_SECONDS + 60
    too_far = client.put("/v1/posts/p2", json={"forum_id": "f", "created_at": iso(later)},
                         headers=ADMIN)  # fmt: skip
    check_error(too_far, 400, "created_at", FUTURE)
    assert str(MAX_CLOCK_SKEW_SECONDS) in too_far.json["error"]["message"]  # type: ignore[index]
    assert client.get("/v1/posts/p2").status_code == 404


@pytest.mark.parametrize(
    ("method", "headers", "status", "text"),
    [
        ("put", {}, 401, "bearer token is required"),
        ("put", {"Authorization": "Basic abc"}, 401, "bearer token is required"),
        ("put", WRONG, 403, "not valid"),
        ("delete", {}, 401, "bearer token is required"),
        ("delete", WRONG, 403, "not valid"),
    ],
)
def test_catalogue_writes_need_the_admin_token(
    client: FlaskClient, method: str, headers: dict[str, str], status: int, text: str
) -> None:
    response = getattr(client, method)("/v1/posts/p1", json={"forum_id": "f"}, headers=headers)
    check_error(response, status, None, text)


def test_forum_change_is_a_conflict(client: FlaskClient) -> None:
    client.put("/v1/posts/p1", json={"forum_id": "f1"}, headers=ADMIN)
    response = client.put("/v1/posts/p1", json={"forum_id": "f2"}, headers=ADMIN)
    check_error(response, 409, "forum_id", "belongs to forum f1")


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("get", "/v1/posts/nosuch", 404, "post_id"),
        ("delete", "/v1/posts/nosuch", 404, "post_id"),
        ("get", "/v1/posts/" + "p" * 65, 400, "post_id"),
        ("get", "/v1/posts/b@d", 400, "post_id"),
        ("get", "/v1/forums/nosuch", 404, "forum_id"),
        ("get", "/v1/forums/b@d", 400, "forum_id"),
    ],
)
def test_unknown_or_malformed_ids(
    client: FlaskClient, method: str, path: str, status: int, field: str
) -> None:
    check_error(getattr(client, method)(path, headers=ADMIN), status, field, "")


def test_unknown_route_and_method(client: FlaskClient) -> None:
    check_error(client.get("/v2/nothing"), 404, None, "")
    check_error(client.delete("/v1/recommendations"), 405, None, "")


@pytest.mark.parametrize(("method", "path"), [(op.method, op.path) for op in OPERATIONS], ids=str)
def test_every_endpoint_refuses_unknown_query_parameters(
    client: FlaskClient, method: str, path: str
) -> None:
    """Checked before the token and the body, so that nothing is done with a misspelt or
    misplaced parameter (a token in the query string, say) silently ignored."""
    register(client, "p1", "f1")
    url = path.replace("{post_id}", "p1").replace("{forum_id}", "f1")
    query = {"token": "test-admin-token"}
    if (method, path) == ("GET", "/v1/recommendations"):
        query["user_id"] = "u"
    response = client.open(url, method=method, query_string=query, json={"forum_id": "f1"},
                           headers=ADMIN)  # fmt: skip
    check_error(response, 400, "token", "token: unknown query parameter")
    assert client.get("/v1/posts/p1").status_code == 200  # nothing was withdrawn


@pytest.mark.parametrize(
    ("query", "field", "text"),
    [("=1", "", "(empty name): unknown query parameter"),
     ("%00=1", "\x00", "\x00: unknown query parameter"),
     ("x" * 5000, "x" * 5000, "unknown query parameter")],
)  # fmt: skip
def test_odd_query_names_are_refused_by_name(
    client: FlaskClient, query: str, field: str, text: str
) -> None:
    check_error(client.get(f"/v1/forums?{query}"), 400, field, text)


def test_options_reads_no_query_and_is_left_to_flask(client: FlaskClient) -> None:
    response = client.open("/v1/recommendations?user_id=u", method="OPTIONS")
    assert response.status_code == 200
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


@pytest.mark.parametrize("path", ["/v1/posts/p1", "/v1/forums", "/healthz"])
def test_a_query_parameter_given_twice_is_refused_everywhere(
    client: FlaskClient, path: str
) -> None:
    check_error(client.get(path + "?a=1&a=2"), 400, "a", "a: unknown query parameter")
    response = client.get("/v1/recommendations?user_id=u&n=1&n=1")
    check_error(response, 400, "n", "given more than once")
