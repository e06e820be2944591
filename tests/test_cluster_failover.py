"""A master of the statistics cluster dies under traffic: the service keeps answering, recovers
by itself once a replica is promoted, and loses no event it answered 202 for.

gunicorn (2 workers) and a Celery worker run on a Redis Cluster of this test alone (3 masters,
a replica each), the broker on a separate Redis. A client thread fetches slates and posts their
impressions, posting a batch again while it is answered 503 (as a caller should); another only
fetches slates, for members spread over every master, so that the outage is measured for
recommendations alone too. The master of the first journal shard's slot is killed with SIGKILL
(every master holds shards of the journal and of the decision stream).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from core.storage import Keys
from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisServer
from tests.processes import ADMIN, Stack, wait_drained, wait_for, wait_for_fresh_snapshots

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]
KEYS = Keys("pb")
FORUMS, POSTS = 3, 4
# The documented bound of one answer during a failover (docs/reliability.md, "Redis Cluster").
LONGEST_ANSWER = 5.0


@dataclass
class Answer:
    kind: str  # "slate" or "events"; "fetch" for the client that only fetches slates
    status: int
    started: float  # time.monotonic()
    seconds: float
    degraded: bool = False  # a slate served from the snapshot alone

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass
class Fetches:
    """One client that only fetches slates, for a new member each time."""

    base: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        member = 0
        while not self.stop.is_set():
            member += 1
            started = time.monotonic()
            response = session.get(f"{self.base}/v1/recommendations", timeout=30,
                                   params={"user_id": f"reader{member}", "n": 3})  # fmt: skip
            degraded = response.status_code == 200 and response.json()["degraded"]
            self.answers.append(Answer("fetch", response.status_code, started,
                                       time.monotonic() - started, degraded))  # fmt: skip


@dataclass
class Traffic:
    """One client: fetch a slate, post its impressions until answered 202, and again."""

    base: str
    answers: list[Answer] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)  # post id -> impressions (202)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        session = requests.Session()
        member = 0
        while not self.stop.is_set():
            member += 1
            slate = self._call(session, "slate", "get", "/v1/recommendations",
                               params={"user_id": f"m{member}", "n": 3})  # fmt: skip
            if slate is None or slate["degraded"] or not slate["items"]:
                continue  # a slate not remembered: its events could not count
            posts = [item["post_id"] for item in slate["items"]]
            body = {"events": [{"request_id": slate["request_id"], "post_id": p} for p in posts]}
            while self._call(session, "events", "post", "/v1/impressions", json=body) is None:
                pass  # 503: the caller posts the batch again
            self.accepted.update(posts)

    def _call(self, session: requests.Session, kind: str, method: str, path: str,
              **options: Any) -> Any:  # fmt: skip
        """The JSON answer when it succeeded (200/202), else None; every answer is recorded."""
        started = time.monotonic()
        response = session.request(method, self.base + path, timeout=30, **options)
        self.answers.append(Answer(kind, response.status_code, started,
                                   time.monotonic() - started))  # fmt: skip
        return response.json() if response.status_code in (200, 202) else None

    def successes_after(self, moment: float) -> int:
        return sum(a.status == 202 and a.started > moment for a in self.answers)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
def stack(own_cluster: LocalCluster, private_redis: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(private_redis, tmp_path, cluster_url=own_cluster.url)
    try:
        yield stack.start(web_workers=2, workers=1, BANDIT_VISIBILITY_TIMEOUT="5")
    finally:
        stack.stop()


def register_posts(base: str) -> None:
    for forum in range(FORUMS):
        for post in range(POSTS):
            url, body = f"{base}/v1/posts/f{forum}-p{post}", {"forum_id": f"f{forum}"}
            response = requests.put(url, json=body, headers=ADMIN, timeout=5)
            assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())


def stored_impressions(stack: Stack) -> Counter[str]:
    stats = stack.statistics()
    try:
        found: Counter[str] = Counter()
        for forum in range(FORUMS):
            raw = stats.hgetall(KEYS.stats(f"f{forum}"))
            found.update({k.decode()[2:]: int(v) for k, v in raw.items()
                          if k.startswith(b"i:")})  # fmt: skip
        return found
    finally:
        stats.close()


def test_a_master_failover_under_traffic_loses_no_accepted_event(
    stack: Stack, own_cluster: LocalCluster, private_redis: RedisServer
) -> None:
    register_posts(stack.base)
    traffic, fetches = Traffic(stack.base), Fetches(stack.base)
    client = threading.Thread(target=traffic.run, daemon=True)
    reader = threading.Thread(target=fetches.run, daemon=True)
    client.start()
    reader.start()
    try:
        wait_for(lambda: traffic.successes_after(0) >= 20, 30, "traffic before the failover")
        master = own_cluster.master_of(KEYS.pending(0))
        replica = own_cluster.replica_of(master)
        killed = time.monotonic()
        master.kill()
        own_cluster.wait_promoted(replica, timeout=30)
        promoted = time.monotonic()
        wait_for(lambda: traffic.successes_after(promoted) >= 20, 30, "traffic after it")
        wait_for(lambda: fetched_after(fetches, promoted) >= 20, 30, "slates after it")
    finally:
        traffic.stop.set()
        fetches.stop.set()
        client.join(timeout=30)
        reader.join(timeout=30)
    assert not client.is_alive() and not reader.is_alive()

    report(traffic, fetches, killed, promoted)
    assert {a.status for a in traffic.answers if a.kind == "slate"} <= {200}
    assert {a.status for a in traffic.answers if a.kind == "events"} <= {202, 503}
    assert {a.status for a in fetches.answers} == {200}  # degraded where they must, never 500
    assert fetched_after(fetches, killed) > 0
    assert max(a.seconds for a in traffic.answers + fetches.answers) < LONGEST_ANSWER
    stack.cluster_url = replica.url  # the node named at start may be the one killed
    broker = redis.Redis(port=private_redis.port, db=1)
    stats = stack.statistics()
    wait_drained(stack.base, stats, broker, timeout=60)
    assert stored_impressions(stack) == traffic.accepted


def fetched_after(fetches: Fetches, moment: float) -> int:
    """Slates the fetching client was served whole (not degraded), fetched after ``moment``."""
    return sum(a.status == 200 and not a.degraded and a.started > moment for a in fetches.answers)


def report(traffic: Traffic, fetches: Fetches, killed: float, promoted: float) -> None:
    """Print what the failover cost (shown with ``pytest -s`` or ``-rP``): the answers that
    ended before, during (until the last 503 or degraded slate ended) and after it, of both
    clients (a request sent just before the kill may be the first to fail)."""
    answers = traffic.answers + fetches.answers
    hurt = [a.ended for a in answers
            if a.ended >= killed and (a.status not in (200, 202) or a.degraded)]  # fmt: skip
    recovered = max(hurt, default=killed)
    phases = {"before": (0, killed), "during": (killed, recovered), "after": (recovered, 1e12)}
    for name, (low, high) in phases.items():
        for client, kinds in (("slates and events", ("slate", "events")), ("slates", ("fetch",))):
            statuses = Counter(f"{a.status}{' degraded' if a.degraded else ''}" for a in answers
                               if a.kind in kinds and low < a.ended <= high)  # fmt: skip
            print(f"failover {name}, {client}: {dict(statuses)}")
    first = min(a.started + a.seconds for a in traffic.answers
                if a.status == 202 and a.started > killed)  # fmt: skip
    longest = max(a.seconds for a in answers if a.started >= killed)
    slowest_slate = max(a.seconds for a in fetches.answers if a.started >= killed)
    print(f"failover: promoted after {promoted - killed:.2f}s, first 202 after "
          f"{first - killed:.2f}s, recovered (last 503 or degraded slate over) after "
          f"{recovered - killed:.2f}s, longest answer {longest:.2f}s (slates alone "
          f"{slowest_slate:.2f}s), events accepted {sum(traffic.accepted.values())}")  # fmt: skip
