"""The decision log drain in real workers: a worker SIGKILLed while it holds the drain lock,
with slates served and events posted throughout, leaves every served slate in the decision
files exactly once, with every counted outcome exactly once, once a new worker has caught up."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import redis
import requests

from core.decision_files.drain import CLOSE_MARGIN_MS
from core.events import SLATE_WAIT_SECONDS
from core.storage.keys import Keys
from devtools.redis_server import RedisServer, free_port
from tests.exposition import samples
from tests.processes import ADMIN, Proc, Stack, wait_drained, wait_for, wait_for_fresh_snapshots
from tests.streams import Stream, build_stream, fetch_slates, post_batch, stored_counts

pytestmark = pytest.mark.e2e

VISIBILITY = 4  # s: the killed worker's unacknowledged batches come back soon
FILE_SECONDS = 10  # the shortest slice BANDIT_DECISION_LOG_FILE_SECONDS allows
LOCK_SECONDS = 5  # the shortest drain lock BANDIT_DECISION_LOG_LOCK_SECONDS allows
WINDOW = 86_400
FORUMS, POSTS_PER_FORUM = 3, 4
LAG = "postbandit_decision_drain_lag_seconds"
WRITTEN = "decision log file written"  # the drain's log line for each file


@pytest.fixture
def stack(private_redis: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(private_redis, tmp_path)
    try:
        yield stack.start(
            web_workers=2, workers=0, BANDIT_VISIBILITY_TIMEOUT=str(VISIBILITY),
            BANDIT_DECISION_LOG_URL=str(tmp_path / "log"),
            BANDIT_DECISION_LOG_FILE_SECONDS=str(FILE_SECONDS),
            BANDIT_DECISION_LOG_LOCK_SECONDS=str(LOCK_SECONDS),
        )  # fmt: skip
    finally:
        stack.stop()


@dataclass
class Traffic:
    """A client thread serving slates and posting their events (with duplicates, retries,
    unknown and expired ids: tests.streams) round after round, until stopped."""

    base: str
    stream: Stream = field(default_factory=lambda: Stream([]))
    rounds: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set() and not self.failures:
            slates = fetch_slates(self.base, 4, 5, seed=self.rounds)
            part = build_stream(slates, seed=self.rounds, batch_size=20, window=WINDOW)
            for kind, events in part.batches:
                response = post_batch(session, self.base, kind, events)
                if response.status_code != 202:
                    self.failures.append(f"{response.status_code} {response.text}")
            self.stream.slates += part.slates
            self.stream.batches += part.batches
            self.rounds += 1

    def after(self, rounds: int, timeout: float) -> None:
        """Wait until ``rounds`` more rounds are done."""
        target = self.rounds + rounds
        wait_for(lambda: self.rounds >= target or bool(self.failures), timeout,
                 f"{rounds} more rounds of traffic")  # fmt: skip
        assert not self.failures, self.failures

    def finish(self) -> Stream:
        assert self.thread is not None
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive() and not self.failures, self.failures
        return self.stream


def catalogue(base: str) -> None:
    for f in range(FORUMS):
        for p in range(POSTS_PER_FORUM):
            response = requests.put(
                f"{base}/v1/posts/f{f}-p{p}", json={"forum_id": f"f{f}"}, headers=ADMIN, timeout=5
            )
            assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())


def cursors(stats: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in stats.hgetall("pb:{drain}:cursors").items()}


def drain_pending(stats: redis.Redis) -> bool:
    """Whether a worker holds the drain lock with a closed slice still to write: it is then
    writing files or about to (the cursor of a stream with entries is behind the last closed
    slice)."""
    pipe = stats.pipeline(transaction=True)
    lock, raw, (seconds, micros) = pipe.exists("pb:{drain}:lock").hgetall(
        "pb:{drain}:cursors").time().execute()  # fmt: skip
    closed = int(seconds) * 1000 + int(micros) // 1000 - CLOSE_MARGIN_MS
    closed = closed // (FILE_SECONDS * 1000) * FILE_SECONDS * 1000
    return bool(lock) and any(int(cursor) < closed for cursor in raw.values())


def newest_ms(stats: redis.Redis, keys: list[str]) -> int:
    """The time of the newest entry of the streams ``keys`` (0: none)."""
    newest = [stats.xrevrange(key, count=1) for key in keys]
    return max((int(n[0][0].split(b"-")[0]) for n in newest if n), default=0)


def lag(worker: str) -> dict[str, float]:
    text = requests.get(worker, timeout=5).text
    return {labels["source"]: v for labels, v in samples(text, LAG)}


def add_worker(stack: Stack) -> tuple[Proc, str]:
    port = free_port()
    worker = stack.add_worker(BANDIT_WORKER_METRICS_PORT=str(port))
    return worker, f"http://127.0.0.1:{port}/metrics"


def written_ahead(stats: redis.Redis, log: Path) -> tuple[list[str], list[str]]:
    """Files written beyond their stream's cursor (a drainer between the write and the
    cursor's move), and temporary files (a drainer mid-write)."""
    at = cursors(stats)
    ahead = [p.name for p in log.glob("*/date=*/*.parquet")
             if int(p.stem.rsplit("-", 1)[1]) > at.get(p.parent.parent.name, 0)]  # fmt: skip
    return ahead, [p.name for p in log.glob("*/date=*/.*.tmp")]


def kill_state(stats: redis.Redis, log: Path) -> str:
    ahead, partial = written_ahead(stats, log)
    return f"files ahead of the cursors: {ahead}, temporary files: {partial}"


def mid_write(stats: redis.Redis, log: Path) -> Callable[[], bool]:
    """Whether a drainer is writing a slice's file or has written it and not yet moved the
    cursor; looked for over two slices, then any drain with a slice to write will do."""
    deadline = time.monotonic() + 2 * FILE_SECONDS

    def check() -> bool:
        if time.monotonic() > deadline:
            return drain_pending(stats)
        return drain_pending(stats) and any(written_ahead(stats, log))

    return check


def kill_while_draining(
    stack: Stack, stats: redis.Redis, log: Path, attempts: int = 5
) -> tuple[Proc, str]:
    """SIGKILL the one worker the moment it holds the drain lock with a slice to write, and
    start another; again if the lock turned out released (checked after the kill: no other
    worker runs, so a lock still there is the dead worker's). The new worker and its
    /metrics."""
    for _ in range(attempts):
        victim = stack.workers[-1]
        wait_for(mid_write(stats, log), FILE_SECONDS * 4, "a drain with a slice to write",
                 step=0.0005)  # fmt: skip
        victim.kill()
        held = stats.pttl("pb:{drain}:lock")
        new = add_worker(stack)
        if held > 0:
            print(f"killed holding the drain lock ({held} ms left); {kill_state(stats, log)}")
            return new
    raise AssertionError(f"no kill landed while the drain lock was held in {attempts} tries")


def test_a_worker_killed_while_draining_leaves_every_slate_once_in_the_files(
    stack: Stack, private_redis: RedisServer, tmp_path: Path
) -> None:
    stats = redis.Redis.from_url(private_redis.url)
    broker = redis.Redis(port=private_redis.port, db=1)
    catalogue(stack.base)
    add_worker(stack)
    traffic = Traffic(stack.base).start()
    wait_for(lambda: "decisions" in cursors(stats), FILE_SECONDS * 4, "the first drained slice")

    first = stack.workers[0]
    log = tmp_path / "log"
    worker, metrics_url = kill_while_draining(stack, stats, log)
    traffic.after(3, 60)  # traffic goes on while the lock of the dead worker stands
    wait_for(lambda: lag(metrics_url).get("decisions", 0) > 0, 30, "the new worker's lag")
    wait_for(lambda: WRITTEN in worker.output(), FILE_SECONDS * 4 + LOCK_SECONDS,
             "the new worker to drain once the dead worker's lock expired")  # fmt: skip
    traffic.after(2, 60)
    stream = traffic.finish()

    # A batch whose events wait for their slate (written behind the response) runs again as a
    # retry that the killed worker may have held: back after the visibility timeout, and its
    # events wait at most SLATE_WAIT_SECONDS.
    wait_drained(stack.base, stats, broker, 30 + VISIBILITY + SLATE_WAIT_SECONDS)
    outcome_keys = [f"pb:{{f:f{f}}}:outcomes" for f in range(FORUMS)]
    last = {
        "decisions": newest_ms(stats, Keys("pb").decision_streams),
        "outcomes": newest_ms(stats, outcome_keys),
    }
    wait_for(lambda: all(cursors(stats).get(s, 0) > ms for s, ms in last.items()),
             FILE_SECONDS * 4, f"the drain to pass the newest entries {last}")  # fmt: skip
    wait_for(lambda: lag(metrics_url) == {"decisions": 0, "outcomes": 0}, 30,
             "the lag at 0 with nothing waiting")  # fmt: skip
    assert WRITTEN in first.output()  # both workers wrote files
    assert written_ahead(stats, log) == ([], [])  # a temporary file left by the kill is gone

    decisions = ds.dataset(str(log / "decisions"), format="parquet").to_table().to_pylist()
    outcomes = ds.dataset(str(log / "outcomes"), format="parquet").to_table().to_pylist()
    served = {slate.request_id: slate.posts for slate in stream.slates}
    rows = Counter((row["request_id"], row["position"]) for row in decisions)
    assert {r for r, _ in rows} == set(served) and max(rows.values()) == 1
    shown: dict[str, dict[str, str]] = {}
    for row in decisions:
        shown.setdefault(row["request_id"], {})[row["post_id"]] = row["forum_id"]
    assert shown == served

    logged = Counter((row["request_id"], row["post_id"], row["kind"]) for row in outcomes)
    assert max(logged.values()) == 1, [k for k, n in logged.items() if n > 1]
    pairs = {(r, p) for r, p, _ in logged}
    clicked = {(r, p) for r, p, k in logged if k == "c"}
    from_files = {post: (sum(p == post for _, p in pairs), sum(p == post for _, p in clicked))
                  for slate in stream.slates for post in slate.posts}  # fmt: skip
    assert from_files == stream.expected() == stored_counts(stats, stream)["posts"]
    print(f"{len(served)} slates, {len(logged)} outcomes, {traffic.rounds} rounds")
