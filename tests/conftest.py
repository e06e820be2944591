"""Shared fixtures: a real redis-server for the session, a clean database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.runtime import Runtime
from core.settings import Settings
from core.storage import Storage
from devtools.redis_server import RedisServer

ADMIN = {"Authorization": "Bearer test-admin-token"}
pytest_plugins = ["tests.cluster_fixtures"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, with AOF (fsync always), that the test may stop,
    hang, kill and restart on the same port (the session server is shared by other tests)."""
    server = RedisServer(data_dir=tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """Statistics database 0, emptied before each test. Database 1 is the Celery broker."""
    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    client.close()
    yield f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    """Celery broker database 1, emptied before each test (no worker outlives a test)."""
    client = redis.Redis(port=redis_server.port, db=1)
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:{redis_server.port}/1"


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def storage(rclient: redis.Redis) -> Storage:
    return Storage(rclient, "pb")


@pytest.fixture
def config(redis_url: str, broker_url: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url,
        "BANDIT_ADMIN_TOKEN": "test-admin-token",
        "BANDIT_SEED": "7",
        "BANDIT_REFRESH_SECONDS": "30",
        "BANDIT_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
    }


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    flask_app = create_app(config)
    yield flask_app
    runtime: Runtime = flask_app.extensions["postbandit"]
    runtime.snapshots.stop()
    runtime.slates.stop()
    runtime.storage.client.close()  # else their sockets close at exit, with a ResourceWarning
    runtime.broker.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def rt(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["postbandit"]
    return runtime


@pytest.fixture
def settings(config: dict[str, Any]) -> Settings:
    return Settings.from_mapping(config)


def register(client: FlaskClient, post_id: str, forum_id: str, **body: Any) -> None:
    response = client.put(
        f"/v1/posts/{post_id}", json={"forum_id": forum_id, **body}, headers=ADMIN
    )
    assert response.status_code in (200, 201), response.json


def written(client: FlaskClient) -> None:
    """Wait until the app has written every slate it served (they are written behind the
    responses: app.slate_writer); a flush returns once they are in Redis."""
    runtime: Runtime = client.application.extensions["postbandit"]
    runtime.slates.flush()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
