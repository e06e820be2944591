"""The input limits hold through the real server: gunicorn with the production config."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from app.schemas import MAX_REQUEST_LINE
from tests.processes import ROOT, Proc, service_env, start_web, wait_for

pytestmark = pytest.mark.e2e


@contextmanager
def gunicorn(redis_url: str, broker_url: str, tmp_path: Path, **extra: str) -> Iterator[str]:
    """The production gunicorn (one worker) for the block; its URL."""
    web: Proc | None = None
    try:
        # gunicorn puts its control socket in XDG_RUNTIME_DIR when that directory exists.
        (tmp_path / "run").mkdir()
        env = service_env(redis_url, broker_url, tmp_path, XDG_RUNTIME_DIR=str(tmp_path / "run"),
                          **extra)  # fmt: skip
        web, url = start_web(env, tmp_path, workers=1)
        yield url
    finally:
        if web is not None:
            web.stop()


@pytest.fixture
def base(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[str]:
    with gunicorn(redis_url, broker_url, tmp_path) as url:
        yield url


def raw_request(base: str, head: bytes, body: bytes = b"") -> bytes:
    """Send a hand-made HTTP/1.1 request; the whole answer (the server closes)."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_gunicorn_opens_no_control_socket_that_other_instances_would_share(
    redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "web.log"
    with gunicorn(redis_url, broker_url, tmp_path, BANDIT_LOG_LEVEL="DEBUG"):
        # After starting its workers the master says what it did about the socket: "Control
        # socket disabled" (at DEBUG), else "listening at" or "Failed to start" it.
        wait_for(lambda: "Control socket" in log.read_text(), 30, "its control socket line")
        lines = [line for line in log.read_text().splitlines() if "Control socket" in line]
        assert len(lines) == 1 and "Control socket disabled" in lines[0], lines
        assert list((tmp_path / "run").iterdir()) == []


def test_an_oversized_body_is_a_413_that_names_the_limit(base: str) -> None:
    body = b'{"events": [' + b" " * (600 * 1024) + b"]}"
    response = requests.post(f"{base}/v1/clicks", data=body, timeout=10,
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "too_large", "field": "body",
        "message": "body: larger than the limit of 524288 bytes",
    }  # fmt: skip


def test_a_chunked_body_is_held_to_the_same_limit(base: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(20):
            yield b" " * 32 * 1024
        yield b"]}"

    response = requests.post(f"{base}/v1/clicks", data=chunks(), timeout=10,
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413, response.text
    assert response.json()["error"]["field"] == "body"


def test_the_longest_allowed_lists_of_short_ids_fit_in_the_request_line(base: str) -> None:
    forums = ",".join(f"f{i:02d}" for i in range(100))
    exclude = ",".join(f"p{i:05d}" for i in range(500))
    url = f"{base}/v1/recommendations?user_id=u&n=50&forums={forums}&exclude={exclude}"
    assert len(url) < MAX_REQUEST_LINE
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text


def test_the_longest_allowed_lists_of_any_ids_fit_in_a_post_body(base: str) -> None:
    body = {"user_id": "u" * 64, "n": 50, "forums": [f"{i:064d}" for i in range(100)],
            "exclude": [f"{i:064d}" for i in range(500)]}  # fmt: skip
    response = requests.post(f"{base}/v1/recommendations", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"request_id", "policy", "experiment", "variant", "items",
                                    "degraded"}  # fmt: skip


def test_a_request_line_over_the_limit_is_a_json_414_that_names_it(base: str) -> None:
    path = "/v1/recommendations?user_id=u&exclude=" + "p," * 4100
    for method in ("GET", "POST", "PUT"):
        answer = raw_request(base, f"{method} {path} HTTP/1.1\r\nHost: x".encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 414 URI Too Long"), answer[:300]
        assert b"Content-Type: application/json" in head
        assert json.loads(body) == {"error": {
            "code": "uri_too_long", "field": "request_line",
            "message": f"request_line: longer than the limit of {MAX_REQUEST_LINE} bytes; send "
                       "long forums/exclude lists in the body of POST /v1/recommendations",
        }}  # fmt: skip


def test_a_line_just_within_the_limit_reaches_the_app(base: str) -> None:
    """The limit is gunicorn's, counted over the whole line: one byte more is the JSON 414."""
    start = "GET /v1/recommendations?user_id=u&exclude="
    ids = "p," * ((MAX_REQUEST_LINE - len(start) - len(" HTTP/1.1")) // 2)
    fits = f"{start}{ids[:-1]}{'q' * (MAX_REQUEST_LINE - len(start + ids) - 8)}"
    assert len(f"{fits} HTTP/1.1") == MAX_REQUEST_LINE
    answer = raw_request(base, f"{fits} HTTP/1.1\r\nHost: x\r\nConnection: close".encode())
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]  # the app's: over 500 ids
    assert b'"field":"exclude"' in answer
    over = raw_request(base, f"{fits}q HTTP/1.1\r\nHost: x".encode())
    assert over.startswith(b"HTTP/1.1 414"), over[:200]


def test_every_refusal_by_gunicorn_is_in_the_error_shape(base: str) -> None:
    for head in (b"GET /healthz HTTP/9.9", b"G\x00T /healthz HTTP/1.1",
                 b"GET /healthz HTTP/1.1\r\nBad Header: x"):  # fmt: skip
        answer = raw_request(base, head + b"\r\nHost: x")
        assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:200]
        error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert set(error) == {"code", "message", "field"} and error["code"] == "bad_request"


def test_gunicorn_and_the_app_agree_on_the_request_line_limit() -> None:
    config = (ROOT / "gunicorn.conf.py").read_text()
    assert re.findall(r"^limit_request_line = (\d+)$", config, re.M) == [str(MAX_REQUEST_LINE)]
