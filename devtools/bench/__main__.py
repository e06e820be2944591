"""``bin/bench``: benchmark the production stack on loopback and write docs/benchmarks.md.

bin/bench                 # everything, about 5 minutes; writes docs/benchmarks.md
bin/bench --quick         # 200 and 4,000 candidates only, short runs, nothing written
bin/bench profile         # py-spy profile of a web worker under load (see profile.py)
bin/bench profile --cluster --label cluster   # the same, statistics on a local cluster
bin/bench experiment      # serving without and with a 3-variant experiment (experiment.py)
bin/bench cluster         # one Redis against a 3-master cluster, capacity model (cluster.py)
bin/bench workers         # gunicorn's sync, gthread and gevent workers, keep-alive and slow
                          # clients (workers.py), about 5 minutes
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from devtools.bench import cluster, experiment, profile, workers
from devtools.bench.catalogue import Catalogue
from devtools.bench.phases import (
    Ingest,
    Settings,
    grow,
    measure_freshness,
    measure_ingest,
    measure_scale_point,
    measure_serving,
)
from devtools.bench.report import Results, plot_scale, render, replace_section
from devtools.bench.stack import ROOT, Stack, loadavg

SIZES = (200, 1000, 4000, 10_000, 20_000, 50_000, 100_000)
SERVING_SIZES = (200, 4000, 20_000)
MEMORY_SIZES = (1000, 10_000, 100_000)
EVENTS_AT = 4000
DOC = ROOT / "docs" / "benchmarks.md"


def sweep(stack: Stack, sizes: tuple[int, ...], cfg: Settings, command: str) -> Results:
    """Grow the catalogue through ``sizes``, measuring at each step what belongs there."""
    catalogue = Catalogue.connect(stack.redis_url)
    results = Results(command, [], None, None, [])
    ingest: Ingest | None = None
    for size in sizes:
        grow(stack, catalogue, size)
        print(f"-- {size:,} live candidates (load {loadavg()})", file=sys.stderr, flush=True)
        point = measure_scale_point(stack, size, cfg, memory=size in MEMORY_SIZES)
        if size in SERVING_SIZES:
            serving = measure_serving(stack, size, cfg)
            results.serving.append(serving)
            point = type(point)(size, serving.load, serving.recommend, point.web_rss_mb,
                                point.worker_rss_mb)  # fmt: skip
        results.scale.append(point)
        if size == EVENTS_AT:
            ingest = measure_ingest(stack, catalogue, cfg)
            freshness = measure_freshness(stack, catalogue, ingest.rate, cfg)
            results = Results(command, results.serving, ingest, freshness, results.scale)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run, not written")
    parser.add_argument("--no-write", action="store_true", help="print only")
    modes = ["all", "profile", "experiment", "cluster", "workers"]
    parser.add_argument("what", nargs="?", choices=modes, default="all")
    parser.add_argument("--candidates", type=int, default=4000, help="profile: live posts")
    parser.add_argument("--seconds", type=float, default=10, help="profile: seconds sampled")
    parser.add_argument("--label", default="current", help="names the section (and plot) written")
    parser.add_argument(
        "--cluster", action="store_true", help="profile: statistics on a local Redis Cluster"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["bin/bench", *(sys.argv[1:] if argv is None else argv)])
    if args.what == "cluster":
        return cluster_mode(args.quick, args.no_write, command)
    cluster_stack = args.what == "profile" and args.cluster
    with (
        tempfile.TemporaryDirectory(prefix="postbandit-bench-") as tmp,
        Stack(Path(tmp), cluster=cluster_stack) as stack,
    ):
        if args.what == "profile":
            text = profile.run(stack, args.candidates, args.seconds, args.label, command)
            print(text)
            if not args.no_write:
                replace_section(DOC, f"profile-{args.label}", text)
            return 0
        if args.what == "experiment":
            return experiment_mode(stack, args.quick, args.no_write, command)
        if args.what == "workers":
            return workers_mode(stack, args.quick, args.no_write, command)
        cfg = Settings(seconds=3, unloaded_seconds=2, ingest_events=22_000, probes=10) \
            if args.quick else Settings()  # fmt: skip
        results = sweep(stack, (200, 4000) if args.quick else SIZES, cfg, command)
    write = not (args.quick or args.no_write)
    plot = ROOT / "docs" / "img" / f"scale-{args.label}.png"
    if write:
        bares = [s.bare.rps for s in results.serving]
        plot_scale(results.scale, sum(bares) / len(bares) if bares else None, plot)
    text = render(results, args.label, plot.relative_to(DOC.parent).as_posix() if write else None)
    print(text)
    if write:
        replace_section(DOC, f"bench-{args.label}", text)
        print(f"written to {DOC.relative_to(ROOT)} and {plot.relative_to(ROOT)}", file=sys.stderr)
    return 0


def experiment_mode(stack: Stack, quick: bool, no_write: bool, command: str) -> int:
    """Serving at 200 and 4,000 candidates without and with a three-variant experiment."""
    sizes, rounds, seconds = ((4000,), 1, 2.0) if quick else ((200, 4000), 4, 6.0)
    text = experiment.run(stack, sizes, rounds, seconds, command)
    print(text)
    if not (quick or no_write):
        replace_section(DOC, "experiment", text)
    return 0


def workers_mode(stack: Stack, quick: bool, no_write: bool, command: str) -> int:
    """The worker classes one after another on one stack (see workers.py)."""
    text = workers.run(stack, workers.QUICK if quick else workers.FULL, command)
    print(text)
    if not (quick or no_write):
        replace_section(DOC, "workers", text)
    return 0


def cluster_mode(quick: bool, no_write: bool, command: str) -> int:
    """One Redis and a 3-master cluster side by side; the capacity model from them."""
    text = cluster.run(cluster.QUICK if quick else cluster.FULL, command)
    print(text)
    if not (quick or no_write):
        replace_section(DOC, "cluster", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
