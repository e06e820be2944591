"""``python -m bandits.simulate bench``: slate selection speed, for docs/benchmarks.md.

The timed call is the full ``policy.select(cands, 10, rng)`` of the service's request path.
``Candidates`` is built outside the timer, as the service builds it once per statistics
refresh (about every second) and then serves every request from it. The pruned draw
(:class:`bandits.topn.TopNSampler`) is timed against it, with its build (once per refresh)
timed apart.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bandits.candidates import Candidates
from bandits.policies import make_policy
from bandits.posterior import FloatArray, post_posterior
from bandits.simulate.provenance import header_lines
from bandits.simulate.report import markdown_table
from bandits.topn import TopNSampler

HEADING = "## bandits: slate selection speed"
COMMAND = "bin/bench-bandits"
SIZES = (100, 1_000, 10_000, 100_000)
PRUNED_SIZES = (200, 4_000, 20_000, 100_000)
FORUMS = 50
SLATE = 10


def candidates(n_posts: int, seed: int = 0) -> Candidates:
    """Synthetic statistics: P posts over 50 forums, 0-2000 impressions, CTRs of 1-5 %."""
    rng = np.random.default_rng(seed)
    forum = rng.integers(0, FORUMS, n_posts)
    imps = rng.integers(0, 2_001, n_posts)
    clicks = rng.binomial(imps, rng.uniform(0.01, 0.05, n_posts))
    extra = rng.integers(0, 100_000, FORUMS)
    f_imps = np.bincount(forum, imps, FORUMS) + extra
    f_clicks = np.bincount(forum, clicks, FORUMS) + rng.binomial(extra, 0.03)
    return Candidates(
        post_forum=forum,
        post_impressions=imps,
        post_clicks=clicks,
        forum_impressions=f_imps,
        forum_clicks=f_clicks,
    )


def timings_ms(calls: Sequence[Callable[[], Any]], repeats: int) -> list[FloatArray]:
    """Wall times (ms) of each call, ``repeats`` rounds, the calls interleaved within a round.

    Interleaving exposes the calls to the same background load (the machine is shared).
    One warm-up round first; the garbage collector is off while timing.
    """
    for call in calls:
        call()
    times = np.zeros((len(calls), repeats))
    gc.disable()
    try:
        for r in range(repeats):
            for i, call in enumerate(calls):
                start = time.perf_counter()
                call()
                times[i, r] = time.perf_counter() - start
    finally:
        gc.enable()
    return [1e3 * row for row in times]


def median_ms(call: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``call`` in milliseconds, after one warm-up call."""
    return float(np.median(timings_ms([call], repeats)[0]))


def floor_call(cands: Candidates, rng: np.random.Generator) -> Callable[[], Any]:
    """One bare ``Generator.beta`` over the posterior arrays plus ``argpartition``."""
    alpha, beta = post_posterior(
        cands.post_impressions,
        cands.post_clicks,
        cands.forum_impressions[cands.post_forum],
        cands.forum_clicks[cands.post_forum],
        cands.global_impressions,
        cands.global_clicks,
        10.0,
    )
    kth = cands.n_posts - SLATE

    def floor() -> Any:
        return np.argpartition(rng.beta(alpha, beta), kth)[kth:]

    return floor


def mabwiser_call(cands: Candidates, seed: int) -> Callable[[], Any]:
    """MABWiser Thompson sampling ``predict()`` with the posts' counts as Beta(1 + c, 1 + f).

    The counts are written into MABWiser's per-arm counters after an empty ``fit`` (fitting
    on millions of single decisions would only rebuild the same counters, slowly).
    ``predict()`` returns the best arm only, less work than a top-10 slate.
    """
    from mabwiser.mab import MAB, LearningPolicy

    arms = list(range(cands.n_posts))
    mab: Any = MAB(arms=arms, learning_policy=LearningPolicy.ThompsonSampling(), seed=seed)
    mab.fit(decisions=np.zeros(0, np.intp), rewards=np.zeros(0))
    mab._imp.arm_to_success_count = dict(zip(arms, (1 + cands.post_clicks).tolist(), strict=True))
    mab._imp.arm_to_fail_count = dict(zip(arms, (1 + cands.post_failures).tolist(), strict=True))
    return mab.predict


@dataclass(frozen=True)
class Row:
    """Times (ms) for one size: select and floor as (median, minimum), MABWiser median."""

    size: int
    select: tuple[float, float]
    floor: tuple[float, float]
    mabwiser: float

    def ratio(self, which: int) -> float:
        """select / floor on medians (0) or minima (1)."""
        return self.select[which] / self.floor[which]


def measure(size: int, repeats: int) -> Row:
    """Time select and the floor (interleaved), then MABWiser, on ``size`` candidates."""
    cands = candidates(size)
    policy = make_policy("two_level_ts")
    rng = np.random.default_rng(1)
    select, floor = timings_ms(
        [lambda: policy.select(cands, SLATE, rng), floor_call(cands, np.random.default_rng(2))],
        repeats,
    )
    mab_repeats = max(5, repeats // max(1, size // 2_000))
    mab = median_ms(mabwiser_call(cands, 3), mab_repeats)
    stats = (float(np.median(select)), float(select.min()))
    return Row(size, stats, (float(np.median(floor)), float(floor.min())), mab)


@dataclass(frozen=True)
class PrunedRow:
    """Full and pruned select (median, minimum ms), build median ms, drawn share, bound."""

    size: int
    full: tuple[float, float]
    pruned: tuple[float, float]
    build: float
    drawn: float
    pruned_share: float
    bound: float


def measure_pruned(size: int, repeats: int) -> PrunedRow:
    """Time select and TopNSampler.select (interleaved) and the sampler's build."""
    cands, policy = candidates(size), make_policy("two_level_ts")
    builds = timings_ms([lambda: TopNSampler.build(policy, cands)], max(3, repeats // 3))[0]
    sampler = TopNSampler.build(policy, cands)
    rng = np.random.default_rng(5)
    full, pruned = timings_ms(
        [lambda: policy.select(cands, SLATE, rng), lambda: sampler.select(SLATE, rng)], repeats
    )
    traces = [sampler.select_traced(SLATE, rng)[1] for _ in range(200)]
    return PrunedRow(
        size,
        (float(np.median(full)), float(full.min())),
        (float(np.median(pruned)), float(pruned.min())),
        float(np.median(builds)),
        float(np.median([t.drawn for t in traces])) / size,
        float(np.mean([t.path == "pruned" for t in traces])),
        max(t.bound for t in traces),
    )


def render_pruned(rows: list[PrunedRow]) -> list[str]:
    """The pruned-draw part of the section."""
    table = [
        [
            f"{r.size:,}",
            f"{r.full[0]:.3f} / {r.full[1]:.3f}",
            f"{r.pruned[0]:.3f} / {r.pruned[1]:.3f}",
            f"{r.full[0] / r.pruned[0]:.1f}x / {r.full[1] / r.pruned[1]:.1f}x",
            f"{100 * r.drawn:.1f} %",
            f"{100 * r.pruned_share:.0f} %",
            f"{r.bound:.1e}",
            f"{r.build:.1f}",
        ]
        for r in rows
    ]
    headers = [
        "K",
        "select ms (median / min)",
        "pruned ms (median / min)",
        "speed-up (medians / minima)",
        "posts drawn (median)",
        "requests pruned",
        "largest bound",
        "build ms (median)",
    ]
    return [
        "### Pruned draw (`bandits/topn.py`)",
        "",
        "`TopNSampler.build(policy, cands)` (once per refresh, outside the request; defaults "
        "delta = 1e-4, forum_tail = 1e-3, min_candidates = 4,000) then "
        "`sampler.select(10, rng)`, timed interleaved with `policy.select(cands, 10, rng)` "
        "on the same candidates. Posts drawn, share of requests pruned (the rest drew every "
        "post or, below 4,000 candidates, went to `policy.select`) and the largest per-request "
        "bound on P(slate differs from the full draw's) over 200 further requests.",
        "",
        markdown_table(headers, table),
        "",
        "The pruned draw costs what its drawn posts cost: every post whose upper quantile "
        "reaches the slate's last score, here the posts with few impressions (the synthetic "
        "posts have 0-2,000), whose wide posteriors can draw high; Beta draws with a "
        "parameter below 1 are also the slowest kind. Below 4,000 candidates it is not "
        "used (200: `policy.select` plus the eligibility check). The build runs once per "
        "refresh: the Beta quantiles of the distinct rounded parameter pairs and one sort.",
        "",
    ]


def variants(repeats: int) -> list[list[str]]:
    """select() and the pruned select with request options on 100,000 candidates."""
    cands, policy = candidates(100_000), make_policy("two_level_ts")
    sampler = TopNSampler.build(policy, cands)
    rng = np.random.default_rng(4)
    cases: dict[str, dict[str, Any]] = {
        "per_forum_cap=2": {"per_forum_cap": 2},
        "allowed_forums=5 forums, exclude=200 posts": {
            "allowed_forums": np.arange(5),
            "exclude": np.arange(0, 100_000, 500),
        },
        "exclude=10,000 posts": {"exclude": np.arange(10_000)},
    }
    rows = []
    for name, opts in cases.items():
        ms = median_ms(partial(policy.select, cands, SLATE, rng, **opts), repeats)
        pruned = median_ms(partial(sampler.select, SLATE, rng, **opts), repeats)
        rows.append([name, f"{ms:.3f}", f"{pruned:.3f}"])
    flat = make_policy("flat_ts")
    flat_sampler = TopNSampler.build(flat, cands)
    rows.append(
        [
            "flat_ts (no options)",
            f"{median_ms(lambda: flat.select(cands, SLATE, rng), repeats):.3f}",
            f"{median_ms(lambda: flat_sampler.select(SLATE, rng), repeats):.3f}",
        ]
    )
    return rows


def _mabwiser_ceiling(rows: list[Row]) -> str:
    """How fast the floor itself is against MABWiser: the ceiling of the 20x target."""
    parts = [f"K = {r.size:,}: {r.mabwiser / r.floor[0]:.1f}x" for r in rows]
    return (
        "MABWiser / floor (medians), the most any `select` could reach: " + "; ".join(parts) + "."
    )


def load_average() -> str:
    """``/proc/loadavg``'s 1, 5 and 15 minute averages ("unknown" where it is missing)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def render(
    rows: list[Row],
    extra: list[list[str]],
    repeats: int,
    pruned: list[PrunedRow],
    load: tuple[str, str] = ("unknown", "unknown"),
) -> str:
    """The benchmarks.md section."""
    table = []
    for r in rows:
        table.append(
            [
                f"{r.size:,}",
                f"{r.select[0]:.3f} / {r.select[1]:.3f}",
                f"{r.floor[0]:.3f} / {r.floor[1]:.3f}",
                _floor_status(r, 0),
                _floor_status(r, 1),
                f"{r.mabwiser:.3f}",
                f"{r.mabwiser / r.select[0]:.1f}x" + _mab_status(r),
            ]
        )
    headers = [
        "K",
        "select ms (median / min)",
        "floor ms (median / min)",
        "select / floor, medians",
        "select / floor, minima",
        "MABWiser predict ms (median)",
        "MABWiser / select (medians)",
    ]
    return "\n".join(
        [
            HEADING,
            "",
            "Generated by `bin/bench-bandits` (`python -m bandits.simulate bench`).",
            "",
            *header_lines(COMMAND),
            f"- load (`/proc/loadavg`, 1 5 15 min): {load[0]} at the start, {load[1]} at the "
            "end (the machine is shared: other work inflates medians more than minima)",
            f"- method: {repeats} rounds after a warm-up; in each round one `select` call and "
            "one floor call, timed one after the other, so both meet the same background "
            "load (the machine is shared with other work); garbage collector off while "
            "timing. MABWiser is timed separately (fewer calls at large K). Medians are the "
            "typical cost, minima the cost with the least interference.",
            "- targets: select / floor <= 1.5 for K >= 1,000; MABWiser / select >= 20 at "
            "K = 10,000.",
            "",
            "Time to choose a top-10 slate: `TwoLevelTS().select(cands, 10, rng)` (defaults: "
            "forum draw, post draw, top-10, order by mean) from a `Candidates` built once "
            f"(outside the timer) over K posts in {FORUMS} forums. Floor: one bare "
            "`Generator.beta` over precomputed posterior arrays of the same K posts, plus "
            "`argpartition`. MABWiser: `MAB(..., ThompsonSampling()).predict()` on the same "
            "counts (it returns the best arm only, less work than a slate).",
            "",
            markdown_table(headers, table),
            "",
            "Beyond the floor, `select` draws every forum's CTR (one `Generator.beta` over the "
            f"{FORUMS} forums, about 10 us), builds the post parameters from them (two "
            "gathers and two additions over K), and sorts the chosen 10.",
            "",
            _mabwiser_ceiling(rows),
            "",
            *render_pruned(pruned),
            "Request options, K = 100,000 (median ms; pruned: `TopNSampler.select`):",
            "",
            markdown_table(["select(...) with", "ms", "pruned ms"], extra),
            "",
        ]
    )


def _floor_status(row: Row, which: int) -> str:
    ratio = row.ratio(which)
    if row.size < 1_000:
        return f"{ratio:.2f} (no target)"
    return f"{ratio:.2f} ({'met' if ratio <= 1.5 else '**missed**'})"


def _mab_status(row: Row) -> str:
    if row.size != 10_000:
        return ""
    return " (met)" if row.mabwiser / row.select[0] >= 20 else " (**missed**)"


def replace_section(existing: str, section: str) -> str:
    """``existing`` with its HEADING section (up to the next ``## ``) replaced or appended."""
    lines = existing.splitlines()
    if HEADING not in lines:
        body = existing.rstrip("\n")
        return (body + "\n\n" if body else "") + section
    start = lines.index(HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "\n".join(lines[end:])
    head = "\n".join(lines[:start])
    return (head + "\n" if head else "") + section + ("\n" + rest + "\n" if rest else "")


def write_bench(doc: Path, repeats: int = 30) -> None:
    """Measure every size, print the section and write it into ``doc``."""
    start_load = load_average()
    rows = []
    for size in SIZES:
        rows.append(measure(size, repeats))
        r = rows[-1]
        print(
            f"K={size:>7,}: select {r.select[0]:8.3f} ms  floor {r.floor[0]:8.3f} ms  "
            f"ratio {r.ratio(0):5.2f} (minima {r.ratio(1):5.2f})  MABWiser {r.mabwiser:9.3f} ms"
            f"  speed-up {r.mabwiser / r.select[0]:6.0f}x",
            file=sys.stderr,
            flush=True,
        )
    pruned = []
    for size in PRUNED_SIZES:
        pruned.append(measure_pruned(size, repeats))
        p = pruned[-1]
        print(
            f"K={size:>7,}: select {p.full[0]:8.3f} ms  pruned {p.pruned[0]:8.3f} ms  "
            f"drawn {100 * p.drawn:5.1f} %  build {p.build:7.1f} ms",
            file=sys.stderr,
            flush=True,
        )
    extra = variants(repeats)
    section = render(rows, extra, repeats, pruned, (start_load, load_average()))
    print(section)
    existing = doc.read_text() if doc.exists() else ""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(replace_section(existing, section))
