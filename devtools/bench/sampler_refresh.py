"""What the pruned draw adds to a web process's snapshot refresh (app.samplers): the time of
one refresh with and without building the sampler, the build alone, and the sampler's
memory, at several catalogue sizes on a private redis-server.

Two kinds of counts: the benchmark catalogue's (devtools.bench.catalogue: 0-3 impressions a
post, the statistics ``bin/bench`` serves and measures freshness and RSS with) and wide ones
(50-2,000 impressions, 1-5 %, the worlds of ``bin/bench-bandits``), where the Beta quantiles
of many distinct parameter pairs are the cost.

    python -m devtools.bench.sampler_refresh [--sizes 4000 20000 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from app.plans import Arm, Plans
from app.samplers import build_samplers
from app.snapshot import Refresher
from bandits import Candidates, TopNSampler, make_policy
from devtools.bench.catalogue import FORUMS, Catalogue
from devtools.bench.stack import rss_mb
from devtools.redis_server import RedisServer


def median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def wide(cands: Candidates, seed: int) -> Candidates:
    """``cands`` with 50-2,000 impressions a post at 1-5 % (forums: their posts' sums)."""
    rng = np.random.default_rng(seed)
    imps = rng.integers(50, 2_001, cands.n_posts).astype(float)
    clicks = rng.binomial(imps.astype(int), rng.uniform(0.01, 0.05, cands.n_posts)).astype(float)
    forum = cands.post_forum
    return Candidates(
        post_forum=forum, post_impressions=imps, post_clicks=clicks,
        forum_impressions=np.bincount(forum, imps, cands.n_forums),
        forum_clicks=np.bincount(forum, clicks, cands.n_forums),
    )  # fmt: skip


def sampler_mib(sampler: TopNSampler) -> float:
    arrays = (sampler.forum_hi, sampler.post_hi, sampler.by_hi, sampler.neg_hi_sorted,
              sampler.by_seed)  # fmt: skip
    return sum(a.nbytes for a in arrays if a is not None) / 2**20


def refreshes(catalogue: Catalogue, plans: Plans | None, repeat: int) -> tuple[float, float]:
    """Median ms of a full read (a new process's first refresh), and of a refresh after one
    post's impression was counted (the steady state under traffic: a new snapshot each time)."""
    storage = catalogue.storage
    first = median_ms(lambda: Refresher(storage, plans)(), repeat)  # noqa: PLW0108 (a new one each time)
    refresh = Refresher(storage, plans)
    refresh()
    times = []
    for i in range(repeat):
        # A new request id each time (a repeated one would count nothing: no change).
        storage.counting.apply_events("i", [(uuid.uuid4().hex, *catalogue.post(i))], 600)
        times.append(median_ms(refresh, 1))
    return first, statistics.median(times)


def measure(catalogue: Catalogue, size: int, repeat: int) -> dict[str, float]:
    policy = make_policy("two_level_ts")
    arm = Arm(policy)
    catalogue.grow(size)
    full_plain, changed_plain = refreshes(catalogue, None, repeat)  # no plan: no sampler
    full_sampler, changed_sampler = refreshes(catalogue, Plans(policy), repeat)
    snap = Refresher(catalogue.storage, Plans(policy))()
    assert snap.size == size and snap.samplers[None].active
    cands = snap.candidates
    bench = median_ms(lambda: build_samplers([arm], lambda _: cands, {}), repeat)
    other = wide(cands, size)
    wide_ms = median_ms(lambda: build_samplers([arm], lambda _: other, {}), repeat)
    rss_before = rss_mb(os.getpid())
    kept = [TopNSampler.build(policy, other) for _ in range(5)]
    rss_per = (rss_mb(os.getpid()) - rss_before) / len(kept)
    return {"posts": size, "full_refresh_ms": full_plain, "with_sampler": full_sampler,
            "refresh_after_a_change_ms": changed_plain, "with_sampler_": changed_sampler,
            "build_ms_bench_counts": bench, "build_ms_wide_counts": wide_ms,
            "sampler_mib": sampler_mib(kept[0]), "rss_mib_per_sampler": rss_per}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4_000, 20_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}; {FORUMS} forums; medians of {args.repeat}")
    with tempfile.TemporaryDirectory() as data, RedisServer(data_dir=Path(data)) as server:
        catalogue = Catalogue.of(redis.Redis(port=server.port))
        for size in sorted(args.sizes):
            row = measure(catalogue, size, args.repeat)
            print(" ".join(f"{k}={v:,.1f}" for k, v in row.items()), flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
