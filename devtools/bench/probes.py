"""HTTP helpers of the benchmark: snapshot age from /metrics, paced background events, and
freshness probes (a click's 202 until it shows in the API and in every process's snapshot)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Self

import requests
from prometheus_client.parser import text_string_to_metric_families

from core.storage import Served

SNAPSHOT_METRIC = "postbandit_snapshot_timestamp_seconds"
PROBE_TIMEOUT = 10.0


def snapshot_times(base: str, session: requests.Session | None = None) -> dict[str, float]:
    """When each web process's snapshot began reading Redis, by pid (a process that holds no
    snapshot yet is absent)."""
    text = (session or requests).get(f"{base}/metrics", timeout=5).text
    return {s.labels["pid"]: s.value for family in text_string_to_metric_families(text)
            if family.name == SNAPSHOT_METRIC for s in family.samples}  # fmt: skip


def snapshot_time(base: str, pids: list[int], session: requests.Session | None = None) -> float:
    """When the oldest snapshot of the web processes ``pids`` began reading Redis (0 while a
    process has none)."""
    times = snapshot_times(base, session)
    return min(times.get(str(pid), 0.0) for pid in pids)


def wait_for_snapshots(base: str, pids: list[int], after: float, timeout: float = 120) -> float:
    """Wait until every web process holds a snapshot read after ``after``; seconds waited.

    A process starts refreshing its snapshot when it serves its first recommendation, so
    recommendations are requested meanwhile.

    Raises:
        TimeoutError: not within ``timeout`` seconds.
    """
    started = time.monotonic()
    session = requests.Session()
    while time.monotonic() - started < timeout:
        for _ in range(4):  # a new connection each, so that every worker may get one
            requests.get(f"{base}/v1/recommendations", params={"user_id": "warm-up"}, timeout=30)
        if snapshot_time(base, pids, session) >= after:
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"snapshots were not refreshed within {timeout}s")


def event_batches(slates: list[Served], per_batch: int = 100) -> Iterator[tuple[str, str]]:
    """(path, body) batches: every slate's posts as impressions, and one click per slate."""
    impressions = [(s.request_id, p) for s in slates for p in s.forums]
    clicks = [(s.request_id, next(iter(s.forums))) for s in slates]
    click_every = max(1, len(impressions) // max(1, len(clicks)))
    for n, start in enumerate(range(0, len(impressions), per_batch)):
        yield "/v1/impressions", _body(impressions[start : start + per_batch])
        if n % click_every == click_every - 1 and clicks:
            yield "/v1/clicks", _body(clicks[:per_batch])
            del clicks[:per_batch]
    for start in range(0, len(clicks), per_batch):
        yield "/v1/clicks", _body(clicks[start : start + per_batch])


def _body(events: list[tuple[str, str]]) -> str:
    return json.dumps({"events": [{"request_id": r, "post_id": p} for r, p in events]})


@dataclass
class Background:
    """``_run`` in a daemon thread from ``start`` until ``stop``; ``_run`` returns once
    ``_stop`` is set."""

    thread_name: ClassVar[str] = "background"
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Set ``_stop`` and wait up to 10 s for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class PacedSender(Background):
    """POSTs impression batches at ``events_per_second`` in a thread until stopped."""

    thread_name: ClassVar[str] = "paced-events"
    base: str
    slates: list[Served]
    events_per_second: float
    sent: int = 0
    failed: int = 0

    def _run(self) -> None:
        session = requests.Session()
        interval = 100 / self.events_per_second
        due = time.monotonic()
        for path, body in event_batches(self.slates):
            if path != "/v1/impressions":
                continue
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            due = max(due + interval, time.monotonic() - interval)
            response = session.post(f"{self.base}{path}", data=body, timeout=10,
                                    headers={"Content-Type": "application/json"})  # fmt: skip
            if response.status_code == 202:
                self.sent += 100
            else:
                self.failed += 1


@dataclass
class SnapshotWatch(Background):
    """Scrapes the oldest snapshot time from /metrics every ``interval`` s into a series."""

    thread_name: ClassVar[str] = "snapshot-watch"
    base: str
    pids: list[int]
    interval: float = 0.02
    series: list[tuple[float, float]] = field(default_factory=list)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.wait(self.interval):
            built = snapshot_time(self.base, self.pids, session)
            self.series.append((time.time(), built))

    def first_after(self, event_time: float, timeout: float = 10) -> float | None:
        """The first scrape time at which every snapshot was read after ``event_time``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for scraped_at, built in list(self.series):
                if built >= event_time:
                    return scraped_at
            time.sleep(self.interval)
        return None


@dataclass(frozen=True)
class Probe:
    to_api: float  # seconds from the click's 202 until GET /v1/posts/{id} shows it
    to_snapshots: float  # ... until every web process's snapshot includes it


def probe_click(
    base: str, member: str, watch: SnapshotWatch, busy: set[str], lock: threading.Lock
) -> Probe | None:
    """Serve a one-post slate, click it, and time the click's way into the API and snapshots.

    None when no post was free to probe. Raises TimeoutError when the click never showed.
    """
    session = requests.Session()
    with lock:
        exclude = ",".join(sorted(busy))
    params = {"user_id": member, "n": "1"}
    if exclude:
        params["exclude"] = exclude
    slate = session.get(f"{base}/v1/recommendations", params=params, timeout=5).json()
    if not slate["items"]:
        return None
    post_id = slate["items"][0]["post_id"]
    with lock:
        if post_id in busy:
            return None
        busy.add(post_id)
    try:
        return _time_click(session, base, slate["request_id"], post_id, watch)
    finally:
        with lock:
            busy.discard(post_id)


def _time_click(
    session: requests.Session, base: str, request_id: str, post_id: str, watch: SnapshotWatch
) -> Probe | None:
    """Raises TimeoutError when the click does not show within ``PROBE_TIMEOUT``."""
    before = session.get(f"{base}/v1/posts/{post_id}", timeout=5).json()["clicks"]
    body = {"events": [{"request_id": request_id, "post_id": post_id}]}
    if session.post(f"{base}/v1/clicks", json=body, timeout=5).status_code != 202:
        return None
    accepted = time.time()
    deadline = time.monotonic() + PROBE_TIMEOUT
    while session.get(f"{base}/v1/posts/{post_id}", timeout=5).json()["clicks"] <= before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"click on {post_id} not visible after {PROBE_TIMEOUT}s")
        time.sleep(0.005)
    visible = time.time()
    in_snapshots = watch.first_after(visible, PROBE_TIMEOUT)
    if in_snapshots is None:
        raise TimeoutError(f"click on {post_id} not in every snapshot after {PROBE_TIMEOUT}s")
    return Probe(visible - accepted, in_snapshots - accepted)
