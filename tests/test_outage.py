"""Every endpoint that reads or writes the catalogue answers 503 with Retry-After, in the one
error shape, while its Redis is stopped (a real redis-server of the test's own, terminated)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from devtools.redis_server import RedisServer
from tests.conftest import ADMIN, register


@pytest.fixture
def stopped(private_redis: RedisServer, config: dict[str, Any]) -> Iterator[FlaskClient]:
    """A client of an app whose Redis held a post and a forum, and then stopped."""
    url = private_redis.url
    flask_app: Flask = create_app({**config, "REDIS_URL": url, "BANDIT_REDIS_TIMEOUT": "0.2"})
    client = flask_app.test_client()
    register(client, "p1", "f1")
    assert client.get("/v1/posts/p1").status_code == 200
    private_redis.stop()
    yield client
    flask_app.extensions["postbandit"].snapshots.stop()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/posts/p1", None),
        ("put", "/v1/posts/p1", {"forum_id": "f1"}),
        ("put", "/v1/posts/p2", {"forum_id": "f1"}),
        ("delete", "/v1/posts/p1", None),
        ("get", "/v1/forums", None),
        ("get", "/v1/forums/f1", None),
    ],
)
def test_catalogue_endpoints_answer_503_while_redis_is_down(
    stopped: FlaskClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = getattr(stopped, method)(path, json=body, headers=ADMIN)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "1"
    assert response.json == {
        "error": {"code": "unavailable", "field": None,
                  "message": "storage is unreachable; retry later"},
    }  # fmt: skip
