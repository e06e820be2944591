"""The benchmark's report: Markdown for the terminal and docs/benchmarks.md, a PNG plot, and
a plain met/missed verdict for every target of the performance issue."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.phases import Freshness, Ingest, ScalePoint, Serving
from devtools.bench.stack import ROOT

SERVING_TARGETS = {200: 0.60, 4000: 0.40, 20000: 0.20}
UNLOADED_TARGET = (4000, 2.0)
INGEST_TARGET = 0.25
FRESHNESS_TARGET_S = 2.0
MEMORY_TARGET = (100_000, 250.0)


@dataclass(frozen=True)
class Results:
    command: str
    serving: list[Serving]
    ingest: Ingest | None
    freshness: Freshness | None
    scale: list[ScalePoint]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return f"{models[0] if models else 'unknown CPU'}, {len(models)} cores"


def commit() -> str:
    """The checked-out commit, marked when code (not the docs this tool writes) differs."""
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs")
    dirty = " (with uncommitted changes)" if changed else ""
    return f"{git('rev-parse', '--short', 'HEAD')}{dirty}"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def targets(results: Results) -> list[str]:
    """One line per target of the issue that this run measured."""
    lines = []
    for s in results.serving:
        if s.candidates in SERVING_TARGETS:
            goal = SERVING_TARGETS[s.candidates]
            lines.append(
                f"recommendations / bare at {s.candidates:,} candidates: "
                f"{s.ratio:.2f} (target >= {goal:.2f}) {verdict(s.ratio >= goal)}"
            )
        if s.candidates == UNLOADED_TARGET[0]:
            goal = UNLOADED_TARGET[1]
            ok = s.unloaded_ratio <= goal
            lines.append(
                f"unloaded p50 at {s.candidates:,}: {s.unloaded_ratio:.2f}x the bare "
                f"endpoint's (target <= {goal:.0f}x) {verdict(ok)}"
            )
    if results.ingest is not None:
        r = results.ingest.ratio
        lines.append(
            f"ingest / direct pipelined writer: {r:.2f} (target >= {INGEST_TARGET}) "
            f"{verdict(r >= INGEST_TARGET)}"
        )
    if results.freshness is not None:
        f = results.freshness
        p99 = f.quantiles("to_snapshots")[1]
        ok = p99 <= FRESHNESS_TARGET_S and f.failed == 0
        lines.append(
            f"freshness p99, click 202 to every snapshot: {p99:.2f} s (target <= "
            f"{FRESHNESS_TARGET_S:.0f} s, {f.failed} probes lost) {verdict(ok)}"
        )
    for p in results.scale:
        if p.candidates == MEMORY_TARGET[0] and p.web_rss_mb:
            worst = max(p.web_rss_mb)
            lines.append(
                f"largest web worker RSS at {p.candidates:,} live posts: {worst:.0f} MB "
                f"(target <= {MEMORY_TARGET[1]:.0f} MB) {verdict(worst <= MEMORY_TARGET[1])}"
            )
    return lines


def render(results: Results, label: str, plot: str | None) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"## Benchmark of the production stack ({label})",
        "",
        f"Machine: {machine()}, shared with three other engineers' work, so `/proc/loadavg` "
        f"(1, 5, 15 min) is shown before each measurement. Date: {now}. Commit: "
        f"`{commit()}`. Command: `{results.command}`.",
        "",
        "The stack is the Procfile's: gunicorn with `gunicorn.conf.py` (2 workers), one Celery "
        "worker, a real `redis-server`, all on 127.0.0.1; wrk generates the HTTP load.",
        "",
        "### Targets",
        "",
        *[f"- {line}" for line in targets(results)],
        "",
        *_serving(results.serving),
        *_ingest(results.ingest),
        *_freshness(results.freshness),
        *_scale(results.scale, plot),
    ]
    return "\n".join(parts) + "\n"


def _serving(rows: list[Serving]) -> list[str]:
    if not rows:
        return []
    out = [
        "### Serving",
        "",
        "`GET /v1/recommendations?n=10` (a new member id per request) against the bare JSON "
        "endpoint `GET /healthz` of the same app and gunicorn, alternately (A B B A) with 8 "
        "connections; then one connection each (unloaded).",
        "",
        "| candidates | load | bare req/s | recs req/s | ratio | bare p50 / p99 ms | "
        "recs p50 / p99 ms | unloaded p50 ms bare / recs (x) | server CPU ms/req bare / recs "
        "(ratio) | of which web / Redis ms/req: bare; recs | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in rows:
        errors = sum(r.socket_errors + r.non2xx for r in (s.bare, s.recommend))
        out.append(
            f"| {s.candidates:,} | {s.load} | {s.bare.rps:,.0f} | {s.recommend.rps:,.0f} | "
            f"{s.ratio:.2f} | {s.bare.p50_ms:.1f} / {s.bare.p99_ms:.1f} | "
            f"{s.recommend.p50_ms:.1f} / {s.recommend.p99_ms:.1f} | "
            f"{s.bare_unloaded.p50_ms:.2f} / {s.recommend_unloaded.p50_ms:.2f} "
            f"({s.unloaded_ratio:.1f}x) | {s.bare_cpu_ms:.2f} / {s.recommend_cpu_ms:.2f} "
            f"({s.bare_cpu_ms / s.recommend_cpu_ms:.2f}) | "
            f"{s.bare_cpu_ms - s.bare_redis_ms:.2f} / {s.bare_redis_ms:.2f}; "
            f"{s.recommend_cpu_ms - s.recommend_redis_ms:.2f} / {s.recommend_redis_ms:.2f} | "
            f"{errors} |"
        )
    return [
        *out,
        "",
        "Server CPU is the CPU time of the gunicorn workers and Redis per request (from "
        "`/proc`), which other work on the machine disturbs less than req/s; wrk's own CPU is "
        "not in it. The next column splits it: the gunicorn workers' part and Redis's part "
        "(its main thread and I/O threads).",
        "",
    ]


def _ingest(ingest: Ingest | None) -> list[str]:
    if ingest is None:
        return []
    i = ingest
    return [
        "### Ingest",
        "",
        f"{i.events:,} events ({i.events * 10 // 11:,} impressions, {i.events // 11:,} clicks) "
        f"in batches of 100, POSTed by wrk over 8 connections with {i.candidates:,} live posts "
        f"(load {i.load}), timed from the first POST until Redis counted the last event; "
        "then the same number of `HINCRBY`s from a redis-py loop pipelining 100 at a time.",
        "",
        "| path | events/s | note |",
        "|---|---:|---|",
        f"| HTTP -> Celery -> Lua, end to end | {i.rate:,.0f} | {i.http.rps:,.0f} batches/s "
        f"accepted (202), p50 {i.http.p50_ms:.1f} ms, p99 {i.http.p99_ms:.1f} ms, "
        f"{i.http.non2xx + i.http.socket_errors} errors |",
        f"| direct pipelined `HINCRBY` | {i.direct_rate:,.0f} | same Redis, same run |",
        f"| ratio | {i.ratio:.2f} | |",
        "",
    ]


def _freshness(fresh: Freshness | None) -> list[str]:
    if fresh is None:
        return []
    api = fresh.quantiles("to_api")
    snap = fresh.quantiles("to_snapshots")
    return [
        "### Freshness",
        "",
        f"{len(fresh.probes)} probe clicks (every 0.4 s; {fresh.failed} lost) while impressions "
        f"arrive at {fresh.achieved_rate:,.0f} events/s (half the maximum measured above is "
        f"{fresh.target_rate:,.0f}), {fresh.candidates:,} live posts, load {fresh.load}. A "
        "probe serves a one-post slate, clicks it, and polls `GET /v1/posts/{id}` every 5 ms "
        "until the click shows (*API*). It can influence a recommendation once the snapshot "
        "of every web process was read from Redis after that moment: each process exports the "
        "time its snapshot's read began, and `/metrics` reports the oldest "
        "(`postbandit_snapshot_timestamp_seconds`, scraped every 20 ms) (*snapshots*). That "
        "bound is conservative: it waits for the refresh after the click was seen, not after "
        "it was applied.",
        "",
        "| from the click's 202 until | p50 s | p99 s |",
        "|---|---:|---:|",
        f"| visible in `GET /v1/posts/{{id}}` | {api[0]:.3f} | {api[1]:.3f} |",
        f"| in every web process's snapshot | {snap[0]:.3f} | {snap[1]:.3f} |",
        "",
    ]


def _scale(points: list[ScalePoint], plot: str | None) -> list[str]:
    if not points:
        return []
    out = [
        "### Scale",
        "",
        "`GET /v1/recommendations?n=10` with 8 connections as the live candidates grow; "
        "resident memory (VmRSS) of each gunicorn worker and of the Celery worker process.",
        "",
        "| live candidates | load | req/s | p50 / p99 ms | web RSS MB | worker RSS MB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for p in points:
        web = " / ".join(f"{m:.0f}" for m in p.web_rss_mb) if p.web_rss_mb else ""
        worker = " / ".join(f"{m:.0f}" for m in p.worker_rss_mb) if p.worker_rss_mb else ""
        out.append(
            f"| {p.candidates:,} | {p.load} | {p.recommend.rps:,.0f} | "
            f"{p.recommend.p50_ms:.1f} / {p.recommend.p99_ms:.1f} | {web} | {worker} |"
        )
    if plot:
        out += ["", f"![req/s against live candidates]({plot})"]
    return [*out, ""]


def plot_scale(points: list[ScalePoint], bare_rps: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p.candidates for p in points], [p.recommend.rps for p in points], "o-",
            label="GET /v1/recommendations (n=10)")  # fmt: skip
    if bare_rps:
        ax.axhline(bare_rps, color="grey", linestyle="--", label="bare JSON endpoint (mean)")
    ax.set_xscale("log")
    ax.set_xlabel("live candidate posts")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("postbandit: throughput against candidates (2 gunicorn workers)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def replace_section(doc: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``<!-- name:begin -->`` / ``end`` markers of ``doc``, keeping
    everything else (other engineers' sections) as it is."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(current)
