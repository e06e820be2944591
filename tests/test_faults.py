"""Faults with real processes: Redis stopped or hung under traffic, web workers started or
replaced during an outage, no snapshot at all.

gunicorn (2 workers) and a Celery worker run on a redis-server of the test's own. While Redis is
out, slates come from the last good snapshot marked degraded, event posts answer 503 with
Retry-After, /readyz answers 503, and nothing hangs; afterwards everything recovers without a
restart, and every event that was answered 202 is counted exactly once.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests

from app.snapshot_file import snapshot_file
from core.settings import Settings
from core.storage import Keys
from devtools.bench.probes import wait_for_snapshots
from devtools.redis_server import RedisServer
from tests.exposition import samples
from tests.processes import ADMIN, Stack, wait_drained, wait_for

pytestmark = pytest.mark.e2e

REDIS_TIMEOUT = 0.25
PUBLISH_TIMEOUT = 0.5
# Bounds on answers during an outage: far below gunicorn's 30 s timeout, with room for a loaded
# machine. A slate costs one Redis timeout; an event post at most three broker timeouts.
SLATE_BOUND = REDIS_TIMEOUT + 1.0
EVENT_BOUND = 3 * PUBLISH_TIMEOUT + 1.0
READY_BOUND = REDIS_TIMEOUT + PUBLISH_TIMEOUT + 1.0
FORUMS = 4
POSTS_PER_FORUM = 5


@pytest.fixture
def stack(private_redis: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(private_redis, tmp_path)
    try:
        yield stack.start(
            web_workers=2, workers=1, BANDIT_REDIS_TIMEOUT=str(REDIS_TIMEOUT),
            BANDIT_PUBLISH_TIMEOUT=str(PUBLISH_TIMEOUT), BANDIT_VISIBILITY_TIMEOUT="5",
        )  # fmt: skip
    finally:
        private_redis.resume()
        stack.stop()


def register_catalogue(base: str) -> dict[str, str]:
    posts = {f"f{f}-p{p}": f"f{f}" for f in range(FORUMS) for p in range(POSTS_PER_FORUM)}
    for post, forum in posts.items():
        response = requests.put(
            f"{base}/v1/posts/{post}", json={"forum_id": forum}, headers=ADMIN, timeout=5
        )
        assert response.status_code == 201, response.text
    return posts


@dataclass
class Call:
    phase: str
    kind: str
    status: int
    seconds: float
    degraded: bool = False
    retry_after: str | None = None
    events: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Traffic:
    """A client thread: a slate, then an impression for each of its posts, again and again."""

    base: str
    phase: str = "up"
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the traffic thread hung"

    def in_phase(self, phase: str, kind: str) -> list[Call]:
        return [c for c in self.calls if c.phase == phase and c.kind == kind]

    def _run(self) -> None:
        session = requests.Session()
        for i in itertools.count():
            if self._stop.is_set():
                return
            slate = self._call(session, "slate", "GET", f"/v1/recommendations?user_id=m{i}&n=3")
            if slate.status == 200 and slate.events:
                body = {"events": [{"request_id": r, "post_id": p} for r, p in slate.events]}
                event = self._call(session, "event", "POST", "/v1/impressions", json=body)
                event.events, event.degraded = slate.events, slate.degraded
            time.sleep(0.02)

    def _call(self, session: requests.Session, kind: str, method: str, path: str,
              **kwargs: Any) -> Call:  # fmt: skip
        phase, started = self.phase, time.monotonic()
        response = session.request(method, self.base + path, timeout=30, **kwargs)
        call = Call(phase, kind, response.status_code, time.monotonic() - started,
                    retry_after=response.headers.get("Retry-After"))  # fmt: skip
        if kind == "slate" and response.status_code == 200:
            body = response.json()
            call.degraded = body["degraded"]
            call.events = [(body["request_id"], item["post_id"]) for item in body["items"]]
        self.calls.append(call)
        return call


def timed(fn: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = fn()
    return response, time.monotonic() - started


def check_outage(stack: Stack, traffic: Traffic, phase: str) -> None:
    """Readiness fails fast, and the traffic of the phase was served as promised."""
    ready, seconds = timed(lambda: requests.get(f"{stack.base}/readyz", timeout=30))
    assert ready.status_code == 503 and seconds < READY_BOUND, (ready.text, seconds)
    slates, events = traffic.in_phase(phase, "slate"), traffic.in_phase(phase, "event")
    assert len(slates) >= 3 and len(events) >= 3, (phase, len(slates), len(events))
    for call in slates:
        assert (call.status, call.degraded) == (200, True), call
        assert call.seconds < SLATE_BOUND, call
    for call in events:
        assert (call.status, call.retry_after) == (503, "2"), call
        assert call.seconds < EVENT_BOUND, call


def recovered(base: str) -> bool:
    ready = requests.get(f"{base}/readyz", timeout=30).status_code == 200
    slate = requests.get(f"{base}/v1/recommendations?user_id=probe", timeout=30).json()
    return ready and slate.get("degraded") is False


def served_in(traffic: Traffic, phase: str) -> bool:
    """Whether the traffic of ``phase`` has had a few slates and event posts answered."""
    return len(traffic.in_phase(phase, "slate")) >= 3 and len(traffic.in_phase(phase, "event")) >= 3


def accepted_in(traffic: Traffic, phase: str) -> bool:
    return any(call.status == 202 for call in traffic.in_phase(phase, "event"))


def counted_markers(client: redis.Redis, keys: Keys) -> set[tuple[str, str]]:
    """Every (request id, post id) whose impression was counted, from the de-dup markers."""
    found = set()
    for key in client.scan_iter(match=f"{keys.prefix}:{{f:*}}:seen:*"):
        request_id = key.decode().rsplit(":", 1)[1]
        found |= {(request_id, m.decode()[2:]) for m in client.smembers(key) if m[:2] == b"i:"}
    return found


def total_impressions(client: redis.Redis, keys: Keys) -> int:
    return sum(int(client.hget(keys.stats(f"f{f}"), "_i") or 0) for f in range(FORUMS))


def test_redis_stopped_then_hung_under_traffic(stack: Stack, private_redis: RedisServer) -> None:
    base = stack.base
    register_catalogue(base)
    registered = time.time()
    wait_for(lambda: recovered(base), 10, "the service to be ready")
    pids = stack.web_pids()
    assert stack.web is not None
    wait_for_snapshots(base, sorted(pids - {stack.web.pid}), after=registered, timeout=30)
    traffic = Traffic(base).start()
    try:
        wait_for(partial(accepted_in, traffic, "up"), 15, "an accepted event")
        for phase, (break_redis, mend_redis) in {
            "stopped": (private_redis.stop, private_redis.start),
            "hung": (private_redis.pause, private_redis.resume),
        }.items():
            break_redis()
            traffic.phase = phase
            wait_for(partial(served_in, traffic, phase), 30, f"traffic while Redis is {phase}")
            check_outage(stack, traffic, phase)
            traffic.phase = f"after {phase}"
            mend_redis()
            wait_for(lambda: recovered(base), 15, f"recovery after Redis {phase}", step=0.2)
            wait_for(partial(accepted_in, traffic, traffic.phase), 15, "an accepted event")
    finally:
        traffic.stop()
    for phase in ("stopped", "hung"):
        print(phase, {kind: f"max {max(c.seconds for c in traffic.in_phase(phase, kind)):.3f} s"
                      for kind in ("slate", "event")})  # fmt: skip
    assert stack.web_pids() == pids, "a web process was restarted"
    assert all(worker.alive() for worker in stack.workers)

    assert accepted_in(traffic, "up")
    statuses = {(c.kind, c.status) for c in traffic.calls}
    assert statuses <= {("slate", 200), ("event", 202), ("event", 503)}, statuses
    accepted = {e for c in traffic.calls if c.status == 202 and not c.degraded for e in c.events}
    sent = {e for c in traffic.calls if c.kind == "event" for e in c.events}
    client, keys = redis.Redis.from_url(private_redis.url), Keys("pb")
    wait_for(lambda: accepted <= counted_markers(client, keys), 30, "every 202 event counted")
    broker = redis.Redis(port=private_redis.port, db=1)
    wait_drained(base, client, broker, 30)  # nothing left that could still count
    markers = counted_markers(client, keys)
    assert markers <= sent
    assert total_impressions(client, keys) == len(markers)  # each counted exactly once


def test_without_any_snapshot_slates_are_a_fast_503(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    private_redis.stop()
    stack = Stack(private_redis, tmp_path)
    try:
        stack.start(web_workers=1, workers=0, BANDIT_REDIS_TIMEOUT=str(REDIS_TIMEOUT),
                    BANDIT_PUBLISH_TIMEOUT=str(PUBLISH_TIMEOUT))  # fmt: skip
        url = f"{stack.base}/v1/recommendations?user_id=u"
        for _ in range(3):
            response, seconds = timed(lambda: requests.get(url, timeout=30))
            assert response.status_code == 503 and seconds < SLATE_BOUND, (response.text, seconds)
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"]["code"] == "unavailable"
        private_redis.start()
        wait_for(lambda: requests.get(url, timeout=30).status_code == 200, 10, "a first snapshot")
        assert requests.get(url, timeout=30).json()["degraded"] is False
    finally:
        stack.stop()


def worker_pids(stack: Stack) -> set[int]:
    """The gunicorn workers (the master's children)."""
    assert stack.web is not None
    return {child.pid for child in psutil.Process(stack.web.pid).children()}


def snapshot_times(base: str) -> dict[int, float]:
    """When each live web worker's snapshot was read, by pid, from /metrics."""
    text = requests.get(f"{base}/metrics", timeout=30).text
    found = samples(text, "postbandit_snapshot_timestamp_seconds")
    return {int(labels["pid"]): seconds for labels, seconds in found}


def slates_from_each_worker(stack: Stack, count: int = 5) -> dict[int, list[requests.Response]]:
    """``count`` slates answered by each web worker alone: the others are stopped (SIGSTOP)
    meanwhile, so only that worker accepts the connections."""
    answered = {}
    for pid in worker_pids(stack):
        others = worker_pids(stack) - {pid}
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            answered[pid] = [
                requests.get(f"{stack.base}/v1/recommendations?user_id=m{i}&n=3", timeout=30,
                             headers={"Connection": "close"})
                for i in range(count)
            ]  # fmt: skip
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)
    return answered


def assert_degraded_slates(answered: dict[int, list[requests.Response]]) -> None:
    for pid, responses in answered.items():
        for response in responses:
            assert response.status_code == 200, (pid, response.status_code, response.text)
            body = response.json()
            assert body["degraded"] is True and len(body["items"]) == 3, (pid, body)


def replace_worker(stack: Stack, pid: int) -> int:
    """SIGKILL web worker ``pid``; the pid of the worker gunicorn starts instead, once booted."""
    assert stack.web is not None
    before = worker_pids(stack)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(stack) - before) == 1, 30, "a replacement web worker")
    (new,) = worker_pids(stack) - before
    output = stack.web.output
    wait_for(lambda: f"Booting worker with pid: {new}" in output(), 30, "the replacement to boot")
    return new


def test_workers_started_or_replaced_during_an_outage_serve_degraded_slates(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    stack = Stack(private_redis, tmp_path)
    try:
        stack.start(web_workers=2, workers=0, BANDIT_REDIS_TIMEOUT=str(REDIS_TIMEOUT))
        register_catalogue(stack.base)
        registered = time.time()
        file = snapshot_file(Settings.from_mapping(stack.env))
        assert file is not None
        wait_for(lambda: (s := file.load()) is not None and s.size == FORUMS * POSTS_PER_FORUM,
                 30, "the catalogue in the snapshot file", step=0.2)  # fmt: skip
        originals = worker_pids(stack)
        wait_for(lambda: set(snapshot_times(stack.base)) == originals
                 and min(snapshot_times(stack.base).values()) > registered, 10,
                 "every worker's snapshot to hold the catalogue")  # fmt: skip
        private_redis.stop()
        # Neither worker has served a slate before the outage.
        assert_degraded_slates(slates_from_each_worker(stack))
        for pid in originals:
            replace_worker(stack, pid)
        assert not worker_pids(stack) & originals
        answered = slates_from_each_worker(stack)
        assert len(answered) == 2
        assert_degraded_slates(answered)
        assert stack.web is not None
        assert stack.web.output().count("serving the last good snapshot from disk") == 2
        private_redis.start()
        wait_for(lambda: recovered(stack.base), 15, "recovery", step=0.2)
    finally:
        stack.stop()
