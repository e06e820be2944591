"""Slow clients against the real server (gunicorn with the production config, 2 workers): many
connections that send their headers or body a byte at a time hold no worker, so other requests
are still answered at once, and each slow connection is cut off after a bounded time."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.processes import Proc, service_env, start_web, wait_for

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 50
# Generous: an answer takes milliseconds; a server whose workers are held gives none at all.
ANSWER_BOUND = 5.0
# gunicorn.conf.py: keepalive (10 s, the time to send the headers) or REQUEST_SECONDS (20 s,
# for the body), plus a wide margin for a loaded machine; without a bound they are never cut off
# (a byte a second would take over an hour).
CUT_OFF_BOUND = 40.0
SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4000


@pytest.fixture
def base(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[str]:
    web: Proc | None = None
    try:
        web, url = start_web(service_env(redis_url, broker_url, tmp_path), tmp_path, workers=2)
        response = requests.put(f"{url}/v1/posts/p1", json={"forum_id": "f1"}, timeout=10,
                                headers={"Authorization": "Bearer dev-admin-token"})  # fmt: skip
        assert response.status_code == 201, response.text
        yield url
    finally:
        if web is not None:
            web.stop()


@dataclass
class SlowClients:
    """Connections that each send ``head`` at once, then ``data`` one byte a second from a
    thread, until the server closes them (``closed``: seconds from connecting, and what the
    server sent) or ``stop``."""

    base: str
    count: int
    data: bytes
    head: bytes = b""
    sent: int = 0
    closed: dict[int, tuple[float, bytes]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SlowClients:
        parts = urlsplit(self.base)
        address = (parts.hostname, parts.port)
        self._socks = [socket.create_connection(address, timeout=10) for _ in range(self.count)]
        for sock in self._socks:
            sock.sendall(self.head)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for sock in self._socks:
            sock.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for i, sock in enumerate(self._socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        while not self._stop.is_set() and len(self.closed) < self.count:
            for i, sock in enumerate(self._socks):
                if i not in self.closed and self.sent < len(self.data):
                    self._send(i, sock, self.data[self.sent : self.sent + 1])
            self.sent += 1
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    self._read(key.data, key.fileobj, selector)  # type: ignore[arg-type]

    def _send(self, i: int, sock: socket.socket, byte: bytes) -> None:
        try:
            sock.send(byte)
        except OSError:
            self.closed.setdefault(i, (time.monotonic() - self._started, b""))

    def _read(self, i: int, sock: socket.socket, selector: selectors.BaseSelector) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data or i in self.closed:
            selector.unregister(sock)
        self.closed.setdefault(i, (time.monotonic() - self._started, data))


def answered_promptly(base: str) -> None:
    """/healthz and a slate, each on a new connection, within ANSWER_BOUND."""
    for path in ("/healthz", "/v1/recommendations?user_id=u1&n=1"):
        started = time.monotonic()
        response = requests.get(base + path, timeout=ANSWER_BOUND * 3)
        seconds = time.monotonic() - started
        assert response.status_code == 200 and seconds < ANSWER_BOUND, (path, seconds)


def test_slow_headers_hold_no_worker_and_are_cut_off(base: str) -> None:
    slow = SlowClients(base, SLOW_CLIENTS, SLOW_HEADERS).start()
    try:
        wait_for(lambda: slow.sent >= 3, 30, "every slow client to have sent 3 bytes")
        for _ in range(3):
            answered_promptly(base)
        wait_for(lambda: len(slow.closed) == SLOW_CLIENTS, CUT_OFF_BOUND, "slow clients cut off")
    finally:
        slow.stop()
    assert all(not data.startswith(b"HTTP/1.1 200") for _, data in slow.closed.values())
    answered_promptly(base)


def test_slow_bodies_hold_no_worker_and_are_cut_off(base: str) -> None:
    head = (b"POST /v1/impressions HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000\r\n\r\n")  # fmt: skip
    slow = SlowClients(base, SLOW_CLIENTS, b'{"events": [' + b" " * 3900, head).start()
    try:
        wait_for(lambda: slow.sent >= 3, 30, "every slow client to have sent 3 body bytes")
        for _ in range(3):
            answered_promptly(base)
        wait_for(lambda: len(slow.closed) == SLOW_CLIENTS, CUT_OFF_BOUND, "slow bodies cut off")
    finally:
        slow.stop()
    answers = {data.split(b"\r\n", 1)[0] for _, data in slow.closed.values()}
    assert answers <= {b"HTTP/1.1 400 BAD REQUEST", b""}, answers
    answered_promptly(base)
