"""Serving measured in rounds, so that two set-ups (no experiment and an experiment, one Redis
and a cluster) can be interleaved in one run and the machine's load falls on both alike."""

from __future__ import annotations

import time
from dataclasses import dataclass

from devtools.bench.phases import BARE, RECOMMEND, load_path, merge
from devtools.bench.redis_stats import Counters, counters
from devtools.bench.stack import Stack, cpu_seconds, loadavg
from devtools.bench.wrk import WrkResult


@dataclass(frozen=True)
class Round:
    """One round: the bare endpoint and recommendations alternately (A B B A)."""

    label: str
    load: str
    bare: WrkResult
    recommend: WrkResult
    recommend_cpu_ms: float  # gunicorn workers and the statistics store, per recommendation
    store: Counters | None  # what the store did during the recommendation runs
    store_seconds: float

    @property
    def ratio(self) -> float:
        return self.recommend.rps / self.bare.rps


def serving_round(
    stack: Stack, label: str, seconds: float, connections: int, count: bool = False
) -> Round:
    """``seconds`` of each endpoint in two halves, A B B A; with ``count``, the store's
    counters over the recommendation halves."""
    load = loadavg()
    runs: dict[str, list[WrkResult]] = {BARE: [], RECOMMEND: []}
    servers = [*stack.web_pids(), *stack.store_pids()]
    masters = stack.masters() if count else []
    cpu = 0.0
    store: Counters | None = None
    timed = 0.0
    for path in (BARE, RECOMMEND, RECOMMEND, BARE):
        before, started = cpu_seconds(servers), time.monotonic()
        start = counters(masters) if count and path == RECOMMEND else None
        runs[path].append(load_path(stack, path, seconds / 2, connections))
        if start is not None:
            delta = counters(masters) - start
            store = delta if store is None else store + delta
            timed += time.monotonic() - started
        if path == RECOMMEND:
            cpu += cpu_seconds(servers) - before
    recommend = merge(runs[RECOMMEND])
    return Round(label, load, merge(runs[BARE]), recommend,
                 1000 * cpu / max(1, recommend.requests), store, timed)  # fmt: skip


def pooled(rounds: list[Round]) -> tuple[float, float]:
    """(recommendations req/s, bare req/s) over every round: requests over seconds."""
    recs = merge([r.recommend for r in rounds])
    bare = merge([r.bare for r in rounds])
    return recs.rps, bare.rps


def pooled_ratio(rounds: list[Round]) -> float:
    recs, bare = pooled(rounds)
    return recs / bare if bare else float("nan")
