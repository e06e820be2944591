"""``bin/bench cluster``: the statistics store on one Redis against a local 3-master Redis
Cluster, in the same run on the same machine, and what the service asks of Redis per slate
and per event (commands, bytes, Redis CPU, memory), from which capacity.py models a deployment.

Both stacks run side by side (the Procfile's processes each, the broker on a Redis of its own
in both), grown to the same catalogue; their serving and ingest rounds alternate, so that the
machine's load falls on both alike. The store's counters (redis_stats.py) are read around each
measured window; what the store does anyway (each web process's snapshot refresh every
second, the Celery worker's polling of the broker) is measured idle first and subtracted, as
are the benchmark's own reads of the counts while it waits for the last event.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis

from devtools.bench import capacity
from devtools.bench.catalogue import FORUMS, Catalogue
from devtools.bench.phases import grow, post_events
from devtools.bench.redis_stats import Counters, KeySample, counters, sample_keys
from devtools.bench.report import commit, machine
from devtools.bench.rounds import Round, pooled, serving_round
from devtools.bench.stack import Stack, cpu_seconds, loadavg
from devtools.bench.wrk import WrkResult

CANDIDATES = 4000
# kind -> (pattern, what to leave out: the catalogue's seeding counts under request ids "seed<n>")
KEY_PATTERNS = {
    "served": ("pb:{u:*}:served:*", ""),
    "seen": ("pb:{f:*}:seen:*", ":seen:seed"),
    "clicked": ("pb:{u:*}:clicked:*", ""),
    "decisions": ("pb:{decisions:*}", ""),
    "outcomes": ("pb:{f:*}:outcomes", ""),
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float
    ingest_rounds: int
    slates_per_ingest: int
    idle_seconds: float


FULL = Plan(rounds=3, seconds=6.0, ingest_rounds=2, slates_per_ingest=5000, idle_seconds=5.0)
QUICK = Plan(rounds=1, seconds=2.0, ingest_rounds=1, slates_per_ingest=300, idle_seconds=2.0)


@dataclass(frozen=True)
class IngestRound:
    load: str
    events: int
    seconds: float
    http: WrkResult
    store: Counters  # background and the benchmark's own reads subtracted
    broker: Counters
    web_cpu_s: float  # the gunicorn workers' CPU time, and the Celery worker's
    worker_cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class Side:
    """One of the two set-ups and what was measured on it."""

    name: str
    stack: Stack
    catalogue: Catalogue = field(init=False)
    background: Counters | None = None  # per second, idle
    broker_background: Counters | None = None
    poll: Counters | None = None  # one read of every forum's counts (Catalogue.totals)
    serving: list[Round] = field(default_factory=list)
    ingest: list[IngestRound] = field(default_factory=list)
    slates_ingested: int = 0
    keys: dict[str, KeySample] = field(default_factory=dict)
    used_memory: int = 0
    master_commands: list[int] = field(default_factory=list)  # per master, whole run

    def __post_init__(self) -> None:
        self.catalogue = Catalogue.of(self.stack.client())

    def broker(self) -> list[redis.Redis]:
        return [redis.Redis.from_url(self.stack.broker_url, decode_responses=True)]

    def per_slate(self) -> Counters:
        """What the store did per recommendation (background subtracted)."""
        assert self.background is not None
        total = sum((r.store for r in self.serving if r.store), start=_zero())
        seconds = sum(r.store_seconds for r in self.serving)
        requests = sum(r.recommend.requests for r in self.serving)
        return (total - self.background.scaled(seconds)).scaled(1 / max(1, requests))

    def per_event(self, broker: bool = False) -> Counters:
        """What the store (or the broker) did per event accepted and counted."""
        total = sum((r.broker if broker else r.store for r in self.ingest), start=_zero())
        return total.scaled(1 / max(1, sum(r.events for r in self.ingest)))

    def ingest_rate(self) -> float:
        return sum(r.events for r in self.ingest) / sum(r.seconds for r in self.ingest)


def _zero() -> Counters:
    return Counters(0, {}, {}, 0, 0, 0.0, 0)


def idle(side: Side, seconds: float) -> None:
    """The store's and the broker's activity per second with no load (snapshot refreshes,
    the worker's polling), and the cost of one read of the counts."""
    masters, broker = side.stack.masters(), side.broker()
    store0, broker0 = counters(masters), counters(broker)
    time.sleep(seconds)  # a measurement window, not a wait for an event
    side.background = (counters(masters) - store0).scaled(1 / seconds)
    side.broker_background = (counters(broker) - broker0).scaled(1 / seconds)
    before = counters(masters)
    for _ in range(5):
        side.catalogue.totals()
    side.poll = (counters(masters) - before).scaled(1 / 5)


def ingest_round(side: Side, slates_count: int, connections: int) -> IngestRound:
    """Slates remembered through the storage layer, then their events over HTTP, counted."""
    assert side.background and side.broker_background and side.poll
    slates = side.catalogue.serve_slates(slates_count)
    masters, broker = side.stack.masters(), side.broker()
    load = loadavg()
    web, worker = side.stack.web_pids(), side.stack.worker_pids()
    web0, worker0 = cpu_seconds(web), cpu_seconds(worker)
    store0, broker0, started = counters(masters), counters(broker), time.monotonic()
    seconds, http, polls = post_events(side.stack, side.catalogue, slates, connections)
    elapsed = time.monotonic() - started
    web_cpu, worker_cpu = cpu_seconds(web) - web0, cpu_seconds(worker) - worker0
    store = counters(masters) - store0 - side.background.scaled(elapsed) - side.poll.scaled(polls)
    broker_used = counters(broker) - broker0 - side.broker_background.scaled(elapsed)
    side.slates_ingested += len(slates)
    return IngestRound(load, 11 * len(slates), seconds, http, store, broker_used, web_cpu,
                       worker_cpu)  # fmt: skip


def sample_memory(side: Side) -> None:
    masters = side.stack.masters()
    side.keys = {name: sample_keys(masters, pattern, skip)
                 for name, (pattern, skip) in KEY_PATTERNS.items()}  # fmt: skip
    side.used_memory = sum(int(c.info("memory")["used_memory"]) for c in masters)
    side.master_commands = [round(counters([c]).commands) for c in masters]


def measure(sides: list[Side], plan: Plan) -> None:
    """Alternate the sides in every phase (A B, then B A), so that neither goes first always."""
    for side in sides:
        grow(side.stack, side.catalogue, CANDIDATES)
    for side in sides:
        idle(side, plan.idle_seconds)
    for n in range(plan.rounds):
        for side in sides if n % 2 == 0 else sides[::-1]:
            side.serving.append(serving_round(side.stack, side.name, plan.seconds, 8, count=True))
    for n in range(plan.ingest_rounds):
        for side in sides if n % 2 == 0 else sides[::-1]:
            side.ingest.append(ingest_round(side, plan.slates_per_ingest, 8))
    for side in sides:
        sample_memory(side)


def run(plan: Plan, command: str) -> str:
    """Start both stacks, measure, and return the Markdown section."""
    load = loadavg()
    with tempfile.TemporaryDirectory(prefix="postbandit-bench-") as tmp, ExitStack() as stacks:
        single = stacks.enter_context(Stack(Path(tmp) / "single", own_broker=True))
        multi = stacks.enter_context(Stack(Path(tmp) / "cluster", cluster=True))
        sides = [Side("one Redis", single), Side("3-master cluster", multi)]
        measure(sides, plan)
    return render(sides, command, load)


def render(sides: list[Side], command: str, load: str) -> str:
    one, many = sides
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## One Redis against a 3-master Redis Cluster, and a capacity model",
        "",
        f"Machine: {machine()}, shared with other engineers' work (`/proc/loadavg` 1, 5, 15 "
        f"min at the start: {load}, and before each round below). Date: {now}. Commit: "
        f"`{commit()}`. Command: `{command}`.",
        "",
        "Two stacks run side by side, each the Procfile's (gunicorn with 2 workers, one Celery "
        "worker) with its broker on a redis-server of its own: *one Redis* keeps the "
        "statistics on one redis-server; *3-master cluster* on a local Redis Cluster of 3 "
        "masters and 3 replicas (`devtools/redis_cluster.py`, `BANDIT_REDIS_CLUSTER=1`, so an "
        "accepted batch also waits for a replica's acknowledgement, `BANDIT_JOURNAL_REPLICAS` "
        "1). No store persists to disk. Both are grown to "
        f"{CANDIDATES:,} live posts in {FORUMS} forums; their rounds alternate (A B, then B A). "
        "Every process of both stacks shares the same 2 cores, so the absolute rates are "
        "bounded by the machine, not by Redis: compare the ratios.",
        "",
        *_serving(sides),
        *_ingest(sides),
        *_per_unit(sides),
        *_memory(sides),
        *capacity.render(measured(one, many)),
    ]
    return "\n".join(lines) + "\n"


def _serving(sides: list[Side]) -> list[str]:
    out = [
        "### Serving",
        "",
        "`/healthz` and `GET /v1/recommendations?n=10` (a new member per request) alternately "
        "(A B B A) with 8 connections, in each round.",
        "",
        "| round | store | load | bare req/s | recs req/s | ratio | recs p50 / p99 ms | "
        "server CPU ms/rec (web + store) |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for n, pair in enumerate(zip(*(s.serving for s in sides), strict=True), start=1):
        for r in pair:
            out.append(
                f"| {n} | {r.label} | {r.load} | {r.bare.rps:,.0f} | {r.recommend.rps:,.0f} | "
                f"{r.ratio:.3f} | {r.recommend.p50_ms:.1f} / {r.recommend.p99_ms:.1f} | "
                f"{r.recommend_cpu_ms:.2f} |"
            )
    (recs1, bare1), (recs3, bare3) = (pooled(s.serving) for s in sides)
    cluster_vs = (recs3 / bare3) / (recs1 / bare1)
    out += [
        "",
        f"Pooled over the rounds: one Redis {recs1:,.0f} recommendations/s ({recs1 / bare1:.3f} "
        f"of `/healthz`), the cluster {recs3:,.0f}/s ({recs3 / bare3:.3f}); the cluster's "
        f"ratio is **{cluster_vs:.2f}** of one Redis's (target >= 0.80: "
        f"{_verdict(cluster_vs >= 0.8)}); in plain req/s {recs3 / recs1:.2f}.",
        "",
    ]
    return out


def _ingest(sides: list[Side]) -> list[str]:
    out = [
        "### Ingest",
        "",
        "Slates remembered through the storage layer, then every slate's 10 impressions and "
        "one click in batches of 100, POSTed by wrk (8 connections), timed from the first POST "
        "until the store counted the last event.",
        "",
        "| round | store | load | events | events/s | batches p50 / p99 ms | web CPU µs/event "
        "| Celery worker CPU µs/event | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, pair in enumerate(zip(*(s.ingest for s in sides), strict=True), start=1):
        for side, r in zip(sides, pair, strict=True):
            out.append(
                f"| {n} | {side.name} | {r.load} | {r.events:,} | {r.rate:,.0f} | "
                f"{r.http.p50_ms:.1f} / {r.http.p99_ms:.1f} | {1e6 * r.web_cpu_s / r.events:.0f} | "
                f"{1e6 * r.worker_cpu_s / r.events:.0f} | {r.http.non2xx + r.http.socket_errors} |"
            )
    one, many = (s.ingest_rate() for s in sides)
    return [*out, "",
            f"Pooled: one Redis {one:,.0f} events/s, the cluster {many:,.0f} events/s: "
            f"**{many / one:.2f}** of one Redis (target >= 0.80: {_verdict(many / one >= 0.8)}).",
            ""]  # fmt: skip


def _per_unit(sides: list[Side]) -> list[str]:
    out = [
        "### Redis work per slate and per event",
        "",
        "Summed over the masters: `INFO commandstats` calls (the commands that Lua scripts run "
        "counted too), `INFO stats` network bytes in and out (replication to the replicas "
        "included), `INFO cpu` user + system CPU of the store's masters, between the start "
        "and end of the measured windows; the idle rate of the same counters (measured first "
        "over a few seconds: snapshot refreshes) is subtracted, as are the benchmark's own "
        "reads while it waits for the last event. The broker is another redis-server.",
        "",
        "| per | store | commands | bytes in | bytes out | Redis CPU µs | top commands |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for label, pick in (("slate", lambda s: s.per_slate()),
                        ("event", lambda s: s.per_event()),
                        ("event (broker)", lambda s: s.per_event(broker=True))):  # fmt: skip
        for side in sides:
            c = pick(side)
            top = ", ".join(f"{k} {v:.2f}" for k, v in _top(c.calls))
            out.append(
                f"| {label} | {side.name} | {c.commands:.2f} | {c.net_in:,.0f} | "
                f"{c.net_out:,.0f} | {1e6 * c.cpu_seconds:.0f} | {top} |"
            )
    idle_lines = [
        f"{s.name} {s.background.commands:,.0f} commands/s and "
        f"{1e3 * s.background.cpu_seconds:.1f} ms CPU/s"
        for s in sides
        if s.background
    ]
    shares = sides[1].master_commands
    total = max(1, sum(shares))
    return [*out, "",
            f"Idle (2 web processes refreshing {FORUMS} forums each second): "
            + "; ".join(idle_lines) + ". Commands per master of the cluster over the whole "
            "run: " + ", ".join(f"{c / total:.0%}" for c in shares) + ".", ""]  # fmt: skip


def _top(calls: dict[str, float], n: int = 5) -> list[tuple[str, float]]:
    return sorted(calls.items(), key=lambda kv: -kv[1])[:n]


def _memory(sides: list[Side]) -> list[str]:
    out = [
        "### Memory of what a slate and its events leave",
        "",
        "Keys counted with `SCAN` on every master and up to 200 of each kind sized with "
        "`MEMORY USAGE key SAMPLES 0`. A served slate's hash lives the attribution window "
        "plus the grace; its events' de-duplication sets (one per forum of the slate that "
        "got an event) as long; a member's clicked posts `BANDIT_RECLICK_SECONDS`.",
        "",
        "| store | kind | keys | mean bytes | mean elements |",
        "|---|---|---:|---:|---:|",
    ]
    for side in sides:
        for name, k in side.keys.items():
            out.append(f"| {side.name} | {name} | {k.keys:,} | {k.mean_bytes:,.0f} | "
                       f"{k.mean_members:,.1f} |")  # fmt: skip
    out += ["", "`used_memory` summed over the masters at the end: " + ", ".join(
        f"{s.name} {s.used_memory / 2**20:,.1f} MiB" for s in sides) + ".", ""]  # fmt: skip
    return out


def measured(one: Side, many: Side) -> capacity.Measured:
    """The capacity model's inputs: the cluster's figures (one Redis's rate per process)."""
    keys = many.keys
    assert many.background is not None and one.background is not None

    def per_element(name: str) -> float:
        k = keys[name]
        return k.mean_bytes / k.mean_members if k.mean_members else 0.0

    recs = pooled(many.serving)[0]
    per_forum = 1 / (many.stack.web_workers * FORUMS)
    return capacity.Measured(
        slate=many.per_slate(), event=many.per_event(), broker_event=many.per_event(broker=True),
        served_bytes=keys["served"].mean_bytes,
        seen_keys_per_slate=keys["seen"].keys / max(1, many.slates_ingested),
        seen_bytes=keys["seen"].mean_bytes, click_bytes=per_element("clicked"),
        decision_bytes=per_element("decisions"), outcome_bytes=per_element("outcomes"),
        refresh_commands=many.background.commands * per_forum,
        refresh_cpu_s=one.background.cpu_seconds * per_forum,
        recs_per_process=pooled(one.serving)[0] / one.stack.web_workers, cluster_recs=recs,
        cluster_events=many.ingest_rate(), forums=FORUMS,
    )  # fmt: skip


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"
