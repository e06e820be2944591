"""No accepted event is lost or counted twice when a worker is SIGKILLed mid-stream, or when
Redis (statistics and broker, AOF with fsync always) is killed and restarted mid-stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from devtools.redis_server import RedisServer
from tests.processes import ADMIN, Stack, wait_drained, wait_for, wait_for_fresh_snapshots
from tests.streams import (
    Event,
    Stream,
    build_stream,
    expected_counts,
    fetch_slates,
    post_batch,
    stored_counts,
)

pytestmark = pytest.mark.e2e

VISIBILITY = 4  # seconds; production keeps the default 300 (docs/reliability.md)
WINDOW = 86_400
FORUMS, POSTS_PER_FORUM = 4, 6
LOST_BROKER = "Connection to broker lost"  # Celery's log line when the broker goes away


@pytest.fixture
def stack(private_redis: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(private_redis, tmp_path)
    try:
        yield stack.start(web_workers=2, workers=0, BANDIT_VISIBILITY_TIMEOUT=str(VISIBILITY))
    finally:
        stack.stop()


def catalogue(base: str) -> None:
    for f in range(FORUMS):
        for p in range(POSTS_PER_FORUM):
            response = requests.put(
                f"{base}/v1/posts/f{f}-p{p}", json={"forum_id": f"f{f}"}, headers=ADMIN, timeout=5
            )
            assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())
    assert len(fetch_slates(base, 1, 50)[0].posts) == FORUMS * POSTS_PER_FORUM


def send_all(base: str, stream: Stream) -> None:
    session = requests.Session()
    for kind, events in stream.batches:
        response = post_batch(session, base, kind, events)
        assert response.status_code == 202, response.text


@dataclass
class Client:
    """A client thread that sends ``batches`` and retries each refused one (503) until it is
    accepted: the first half at once, the rest from the moment ``outage`` is set, so that it
    meets the outage."""

    base: str
    batches: list[tuple[str, list[Event]]]
    refused: int = 0
    unexpected: list[str] = field(default_factory=list)
    outage: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        session = requests.Session()
        for i, (kind, events) in enumerate(self.batches):
            if i == len(self.batches) // 2:
                self.outage.wait()
            while (response := post_batch(session, self.base, kind, events)).status_code != 202:
                if response.status_code != 503:
                    self.unexpected.append(f"{response.status_code} {response.text}")
                    return
                self.refused += 1
                time.sleep(0.1)  # the client's back-off before it retries
        self.done.set()


def counted(client: redis.Redis) -> int:
    return sum(int(client.hget(f"pb:{{f:f{f}}}:stats", "_i") or 0) for f in range(FORUMS))


def settled(client: redis.Redis, stream: Stream) -> bool:
    return stored_counts(client, stream) == expected_counts(stream)


def test_worker_killed_mid_stream_counts_every_event_once(
    stack: Stack, private_redis: RedisServer
) -> None:
    catalogue(stack.base)
    stream = build_stream(fetch_slates(stack.base, 300, 12), seed=5, batch_size=500, window=WINDOW)
    total = sum(i for i, _ in stream.expected().values())
    send_all(stack.base, stream)  # all 202, queued while no worker runs
    stats = redis.Redis.from_url(private_redis.url)
    broker = redis.Redis(port=private_redis.port, db=1)
    assert counted(stats) == 0 and broker.llen("postbandit.events") == len(stream.batches)

    first = stack.add_worker()
    wait_for(lambda: counted(stats) > total // 4, 30, "a quarter of the stream", step=0.005)
    first.kill()
    in_flight = broker.hlen("unacked")
    partial = counted(stats)
    assert in_flight > 0, "the kill did not interrupt any delivered message"
    assert 0 < partial < total

    stack.add_worker()
    wait_for(lambda: settled(stats, stream), 30 + VISIBILITY, "the exact expected counts")
    # The killed worker's messages come back after the visibility timeout, those it had applied
    # too: once nothing is left to deliver, any double count would show.
    wait_drained(stack.base, stats, broker, 30 + VISIBILITY)
    assert stored_counts(stats, stream) == expected_counts(stream)
    print(f"killed with {in_flight} messages in flight and {partial} impressions counted")


def test_a_message_the_broker_lost_is_published_again_from_the_journal(
    stack: Stack, private_redis: RedisServer
) -> None:
    catalogue(stack.base)
    slates = fetch_slates(stack.base, 12, 5)
    stream = build_stream(slates, seed=7, batch_size=10, window=WINDOW, retries=False)
    send_all(stack.base, stream)
    broker = redis.Redis(port=private_redis.port, db=1)
    # The next message a worker would take disappears, as when a worker is killed between
    # kombu's BRPOP and its unacked record: nothing in the broker remembers it.
    assert broker.rpop("postbandit.events") is not None  # the oldest: stream.batches[0]
    assert Stream(slates, stream.batches[1:]).expected() != stream.expected()
    stats = redis.Redis.from_url(private_redis.url)
    worker = stack.add_worker()
    wait_for(lambda: settled(stats, stream), 30 + VISIBILITY, "the exact expected counts")
    wait_for(lambda: "overdue event batches again" in worker.output(), 30, "the sweep's log line")
    wait_drained(stack.base, stats, broker, 30 + VISIBILITY)
    assert stored_counts(stats, stream) == expected_counts(stream)


def test_redis_killed_and_restarted_with_aof_loses_no_accepted_event(
    stack: Stack, private_redis: RedisServer
) -> None:
    """Redis (AOF, fsync always) is SIGKILLed while the worker works through a backlog and a
    client keeps sending; the client retries what was refused (503)."""
    catalogue(stack.base)
    stream = build_stream(fetch_slates(stack.base, 200, 12), seed=6, batch_size=150, window=WINDOW)
    half = len(stream.batches) // 2
    send_all(stack.base, Stream(stream.slates, stream.batches[:half]))
    client = Client(stack.base, stream.batches[half:])
    stats = redis.Redis.from_url(private_redis.url)
    worker = stack.add_worker()
    total = sum(i for i, _ in stream.expected().values())
    broker = redis.Redis(port=private_redis.port, db=1)
    client.start()
    wait_for(lambda: counted(stats) > total // 5 and broker.hlen("unacked") > 0, 30,
             "a fifth of the stream, messages in flight", step=0.005)  # fmt: skip
    private_redis.kill()
    client.outage.set()
    wait_for(lambda: client.refused > 0, 30, "a batch refused during the outage")
    private_redis.start()
    assert client.done.wait(60), "the client did not finish"
    assert client.unexpected == []
    wait_for(lambda: settled(stats, stream), 40 + VISIBILITY, "the exact expected counts")
    wait_drained(stack.base, stats, broker, 40 + VISIBILITY)
    assert stored_counts(stats, stream) == expected_counts(stream)
    assert worker.alive(), "the worker did not survive the broker's restart"


def test_worker_survives_redis_going_away_with_messages_in_flight(
    stack: Stack, private_redis: RedisServer
) -> None:
    """A clean Redis shutdown and restart while the worker holds unacknowledged messages: the
    worker reconnects by itself (workers/kombu_patch.py) and every event counts once."""
    catalogue(stack.base)
    stream = build_stream(fetch_slates(stack.base, 150, 12), seed=8, batch_size=100, window=WINDOW)
    send_all(stack.base, stream)
    stats = redis.Redis.from_url(private_redis.url)
    broker = redis.Redis(port=private_redis.port, db=1)
    worker = stack.add_worker()
    wait_for(lambda: counted(stats) > 0 and broker.hlen("unacked") > 0, 30,
             "messages in flight", step=0.005)  # fmt: skip
    private_redis.stop()
    wait_for(lambda: LOST_BROKER in worker.output() or not worker.alive(), 30,
             "the worker to notice the broker is gone")  # fmt: skip
    private_redis.start()
    wait_for(lambda: settled(stats, stream), 40 + VISIBILITY, "the exact expected counts")
    wait_drained(stack.base, stats, broker, 40 + VISIBILITY)
    assert stored_counts(stats, stream) == expected_counts(stream)
    assert worker.alive(), "the worker did not survive the broker's restart"
