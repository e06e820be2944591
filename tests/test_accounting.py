"""Exactly-once accounting: a known stream of events through 3 gunicorn workers and 2 Celery
worker processes, from 4 concurrent clients, leaves every stored count equal to its expected
value, and the workers account for every event sent."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.storage import Keys
from core.storage.journal import Journal
from devtools.redis_server import RedisServer, free_port
from tests.processes import ADMIN, Stack, wait_for, wait_for_fresh_snapshots
from tests.streams import (
    Stream,
    build_stream,
    expected_counts,
    fetch_slates,
    stored_counts,
    stored_forum_window,
)

pytestmark = pytest.mark.e2e

WINDOW = 86_400
FORUM_WINDOW = 20  # BANDIT_FORUM_WINDOW's default, which the stack runs
FORUMS, POSTS_PER_FORUM = 5, 8
CLIENTS = 4


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def stack(
    private_redis: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The stack on one Redis, or with its statistics on the session's Redis Cluster."""
    cluster_url = request.getfixturevalue("cluster").url if request.param == "cluster" else ""
    stack = Stack(private_redis, tmp_path, cluster_url=cluster_url)
    try:
        yield stack.start(web_workers=3, workers=0)
    finally:
        stack.stop()


def worker_outcomes(ports: list[int]) -> Counter[str]:
    """``postbandit_events_applied_total`` by result, summed over the worker processes."""
    found: Counter[str] = Counter()
    for port in ports:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "postbandit_events_applied_total":
                    found[sample.labels["result"]] += int(sample.value)
    return found


def send_concurrently(base: str, stream: Stream) -> None:
    def send(batches: list[tuple[str, list[tuple[str, str]]]]) -> list[int]:
        session = requests.Session()
        statuses = []
        for kind, events in batches:
            body = {"events": [{"request_id": r, "post_id": p} for r, p in events]}
            statuses.append(session.post(f"{base}/v1/{kind}s", json=body, timeout=30).status_code)
        return statuses

    shares = [stream.batches[i::CLIENTS] for i in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(itertools.chain.from_iterable(pool.map(send, shares)))
    assert statuses == [202] * len(stream.batches)


def test_every_stored_count_is_exactly_the_expected_one(stack: Stack) -> None:
    for f, p in itertools.product(range(FORUMS), range(POSTS_PER_FORUM)):
        response = requests.put(f"{stack.base}/v1/posts/f{f}-p{p}", json={"forum_id": f"f{f}"},
                                headers=ADMIN, timeout=5)  # fmt: skip
        assert response.status_code == 201
    ports = [free_port(), free_port()]
    for port in ports:
        stack.add_worker(BANDIT_WORKER_METRICS_PORT=str(port),
                         BANDIT_WORKER_METRICS_HOST="127.0.0.1")  # fmt: skip
    wait_for_fresh_snapshots(stack.base, after=time.time())
    assert len(fetch_slates(stack.base, 1, 50)[0].posts) == FORUMS * POSTS_PER_FORUM
    slates = fetch_slates(stack.base, 150, 8, seed=1)
    stream = build_stream(slates, seed=3, batch_size=25, window=WINDOW)
    send_concurrently(stack.base, stream)

    stats = stack.statistics()
    expected = expected_counts(stream)
    wait_for(lambda: stored_counts(stats, stream) == expected, 60, "the expected counts")
    windowed = stored_forum_window(stats, stream)
    for forum, (impressions, least, most) in stream.forum_window(FORUM_WINDOW).items():
        assert windowed[forum][0] == impressions, forum
        assert least <= windowed[forum][1] <= most, forum
    sent = sum(len(events) for _, events in stream.batches)
    wait_for(lambda: sum(worker_outcomes(ports).values()) == sent, 10, "every event accounted")

    outcomes = worker_outcomes(ports)
    want = stream.outcomes()
    assert outcomes["counted"] + outcomes["duplicate"] == want["counted or duplicate"]
    for result in ("unknown_request", "expired", "not_served"):
        assert outcomes[result] == want[result] > 0, result
    for post_id, (impressions, clicks) in list(expected["posts"].items())[:10]:
        view = requests.get(f"{stack.base}/v1/posts/{post_id}", timeout=5).json()
        assert (view["impressions"], view["clicks"]) == (impressions, clicks)
    forums = requests.get(f"{stack.base}/v1/forums", timeout=5).json()["forums"]
    assert {f["forum_id"]: (f["impressions"], f["clicks"]) for f in forums} == expected["forums"]
    assert Journal(stats, Keys("pb")).is_empty()  # the journal is empty once all is applied
