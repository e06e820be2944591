"""The measurements of the benchmark, each against the running stack."""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import redis

from core.storage import Served
from devtools.bench.catalogue import Catalogue
from devtools.bench.probes import (
    PacedSender,
    Probe,
    SnapshotWatch,
    event_batches,
    probe_click,
    wait_for_snapshots,
)
from devtools.bench.stack import Stack, cpu_seconds, loadavg, rss_mb
from devtools.bench.wrk import WrkResult, finish_wrk, run_wrk, start_wrk

RECOMMEND = "/v1/recommendations?n=10&user_id=m"
BARE = "/healthz"


@dataclass(frozen=True)
class Settings:
    seconds: float = 6.0  # per loaded measurement, split in two rounds
    unloaded_seconds: float = 3.0
    connections: int = 8
    ingest_events: int = 110_000
    probes: int = 40


@dataclass(frozen=True)
class Serving:
    candidates: int
    load: str
    bare: WrkResult
    recommend: WrkResult
    bare_unloaded: WrkResult
    recommend_unloaded: WrkResult
    bare_cpu_ms: float  # CPU time of the gunicorn workers and Redis per request
    recommend_cpu_ms: float
    bare_redis_ms: float = 0.0  # the part of it spent in Redis (the statistics store)
    recommend_redis_ms: float = 0.0

    @property
    def ratio(self) -> float:
        return self.recommend.rps / self.bare.rps

    @property
    def unloaded_ratio(self) -> float:
        return self.recommend_unloaded.p50_ms / self.bare_unloaded.p50_ms


@dataclass(frozen=True)
class Ingest:
    candidates: int
    load: str
    events: int
    seconds: float
    http: WrkResult
    direct_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def direct_rate(self) -> float:
        return self.events / self.direct_seconds

    @property
    def ratio(self) -> float:
        return self.rate / self.direct_rate


@dataclass(frozen=True)
class Freshness:
    candidates: int
    load: str
    target_rate: float
    achieved_rate: float
    probes: list[Probe]
    failed: int

    def quantiles(self, attr: str) -> tuple[float, float]:
        values = sorted(getattr(p, attr) for p in self.probes)
        if len(values) < 2:
            return (values[0], values[0]) if values else (float("nan"), float("nan"))
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cuts[49], cuts[98]


@dataclass(frozen=True)
class ScalePoint:
    candidates: int
    load: str
    recommend: WrkResult
    web_rss_mb: list[float] | None
    worker_rss_mb: list[float] | None


def grow(stack: Stack, catalogue: Catalogue, size: int) -> None:
    """Register posts up to ``size`` and wait until every web process's snapshot has them."""
    catalogue.grow(size)
    wait_for_snapshots(stack.base, stack.web_pids(), after=time.time())


def measure_serving(stack: Stack, size: int, cfg: Settings) -> Serving:
    """Bare and recommendation endpoints alternately (A B B A), then one connection each."""
    load = loadavg()
    half = cfg.seconds / 2
    runs: dict[str, list[WrkResult]] = {BARE: [], RECOMMEND: []}
    web_cpu, store_cpu = dict.fromkeys(runs, 0.0), dict.fromkeys(runs, 0.0)
    web, store = stack.web_pids(), stack.store_pids()
    for path in (BARE, RECOMMEND, RECOMMEND, BARE):
        before = cpu_seconds(web), cpu_seconds(store)
        runs[path].append(load_path(stack, path, half, cfg.connections))
        web_cpu[path] += cpu_seconds(web) - before[0]
        store_cpu[path] += cpu_seconds(store) - before[1]
    bare, recommend = merge(runs[BARE]), merge(runs[RECOMMEND])
    return Serving(
        candidates=size, load=load, bare=bare, recommend=recommend,
        bare_unloaded=load_path(stack, BARE, cfg.unloaded_seconds, 1),
        recommend_unloaded=load_path(stack, RECOMMEND, cfg.unloaded_seconds, 1),
        bare_cpu_ms=1000 * (web_cpu[BARE] + store_cpu[BARE]) / bare.requests,
        recommend_cpu_ms=1000 * (web_cpu[RECOMMEND] + store_cpu[RECOMMEND]) / recommend.requests,
        bare_redis_ms=1000 * store_cpu[BARE] / bare.requests,
        recommend_redis_ms=1000 * store_cpu[RECOMMEND] / recommend.requests,
    )  # fmt: skip


def load_path(stack: Stack, path: str, seconds: float, connections: int) -> WrkResult:
    if path == RECOMMEND:
        return run_wrk(f"{stack.base}/", seconds, connections, args=(RECOMMEND,))
    return run_wrk(f"{stack.base}{path}", seconds, connections)


def merge(runs: list[WrkResult]) -> WrkResult:
    """Requests and time summed; the worse of the rounds' percentiles."""
    return WrkResult(
        requests=sum(r.requests for r in runs), seconds=sum(r.seconds for r in runs),
        socket_errors=sum(r.socket_errors for r in runs), non2xx=sum(r.non2xx for r in runs),
        p50_ms=max(r.p50_ms for r in runs), p99_ms=max(r.p99_ms for r in runs),
    )  # fmt: skip


def measure_ingest(stack: Stack, catalogue: Catalogue, cfg: Settings) -> Ingest:
    """Batches of 100 events POSTed by wrk until the last is counted in Redis, then the same
    number of HINCRBYs written directly with a pipelined redis-py loop, for comparison."""
    slates = catalogue.serve_slates(cfg.ingest_events // 11)
    load = loadavg()
    seconds, http, _ = post_events(stack, catalogue, slates, cfg.connections)
    events = len(slates) * 11
    return Ingest(catalogue.size, load, events, seconds, http, direct_writer(stack, events))


def post_events(
    stack: Stack, catalogue: Catalogue, slates: list[Served], connections: int
) -> tuple[float, WrkResult, int]:
    """Every slate's impressions and one click each, in batches of 100 POSTed by wrk: seconds
    from the first POST until Redis counted the last event, wrk's result, and how many times
    the counts were read meanwhile (:meth:`Catalogue.totals`)."""
    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp) / "batches.tsv"
        batches.write_text("".join(f"{p}\t{b}\n" for p, b in event_batches(slates)))
        before = catalogue.totals()
        expected = (before[0] + 10 * len(slates), before[1] + len(slates))
        started = time.monotonic()
        wrk = start_wrk(f"{stack.base}/", 300, connections, "ingest.lua", (str(batches),))
        try:
            done, polls = _wait_totals(catalogue, expected, started)
        finally:
            http = finish_wrk(wrk, interrupt=True)
    return done - started, http, polls


def _wait_totals(
    catalogue: Catalogue, expected: tuple[int, int], started: float
) -> tuple[float, int]:
    """When Redis counted every event, and how many reads that took; TimeoutError after 5
    minutes."""
    polls = 0
    while time.monotonic() - started < 300:
        totals = catalogue.totals()
        polls += 1
        if totals[0] >= expected[0] and totals[1] >= expected[1]:
            return time.monotonic(), polls
        time.sleep(0.025)  # polling costs CPU that the stack under test shares
    raise TimeoutError(f"events not all applied: {catalogue.totals()} of {expected}")


def direct_writer(stack: Stack, events: int, batch: int = 100) -> float:
    """Seconds for ``events`` HINCRBYs, pipelined ``batch`` at a time, straight to Redis.

    This is the yardstick the issue names, so it bypasses core.storage on purpose (and uses
    its own scratch key, deleted afterwards).
    """
    client = redis.Redis.from_url(stack.redis_url)
    key = "bench:direct-writer"
    started = time.monotonic()
    for start in range(0, events, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(events, start + batch)):
            pipe.hincrby(key, f"i:b{i % 4000}", 1)
        pipe.execute()
    seconds = time.monotonic() - started
    client.delete(key)
    client.close()
    return seconds


def measure_freshness(
    stack: Stack, catalogue: Catalogue, max_rate: float, cfg: Settings
) -> Freshness:
    """Clicks probed while background impressions arrive at half the maximum ingest rate."""
    rate = max_rate / 2
    duration = cfg.probes * 0.4 + 15
    slates = catalogue.serve_slates(int(rate * duration / 10) + 10)
    load = loadavg()
    watch = SnapshotWatch(stack.base, stack.web_pids()).start()
    sender = PacedSender(stack.base, slates, rate).start()
    started = time.monotonic()
    try:
        probes, failed = _run_probes(stack.base, watch, cfg.probes)
    finally:
        sender.stop()
        watch.stop()
    achieved = sender.sent / (time.monotonic() - started)
    return Freshness(catalogue.size, load, rate, achieved, probes, failed)


def _run_probes(base: str, watch: SnapshotWatch, count: int) -> tuple[list[Probe], int]:
    busy: set[str] = set()
    lock = threading.Lock()
    probes: list[Probe] = []
    failed = 0
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = []
        for i in range(count):
            futures.append(pool.submit(probe_click, base, f"probe{i}", watch, busy, lock))
            time.sleep(0.4)
        for future in futures:
            try:
                probe = future.result()
            except TimeoutError:
                failed += 1
                continue
            if probe is not None:
                probes.append(probe)
    return probes, failed


def measure_scale_point(stack: Stack, size: int, cfg: Settings, memory: bool) -> ScalePoint:
    load = loadavg()
    result = load_path(stack, RECOMMEND, cfg.seconds / 2, cfg.connections)
    web = [rss_mb(pid) for pid in stack.web_pids()] if memory else None
    worker = [rss_mb(pid) for pid in stack.worker_pids()] if memory else None
    return ScalePoint(size, load, result, web, worker)
