"""A capacity model for a Redis Cluster deployment, from what ``bin/bench cluster`` measured
per slate and per event, and the assumptions stated in :data:`ASSUMED` (printed with it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.settings import Settings
from core.storage.decision_log import OUTCOMES_PER_DECISION
from devtools.bench.redis_stats import Counters

SLATES_PER_S = 5_000
EVENTS_PER_S = 50_000
CLICK_SHARE = 1 / 11  # the benchmark's mix: ten impressions and one click per slate
ASSUMED_FORUMS = 5_000  # forums with live posts, each read by every web process each second
CORE_BUDGET = 0.5  # of one core per master: room for peaks, failover and BGSAVE/AOF rewrite
MEMORY_BUDGET = 25 * 2**30  # data per master: full resyncs and failovers stay quick
GIB = 2**30


@dataclass(frozen=True)
class Measured:
    """What the cluster run measured (per slate and per event: background subtracted)."""

    slate: Counters
    event: Counters
    broker_event: Counters
    served_bytes: float  # a served slate's hash
    seen_keys_per_slate: float  # de-dup sets of a slate that got its 10 impressions and a click
    seen_bytes: float
    click_bytes: float  # a member's clicked zset, per click it holds
    decision_bytes: float  # per entry of the decision stream
    outcome_bytes: float  # per entry of a forum's outcome stream
    refresh_commands: float  # per forum, per web process, per second (idle)
    refresh_cpu_s: float
    recs_per_process: float  # recommendations/s of one gunicorn worker (2 shared cores)
    cluster_recs: float
    cluster_events: float
    forums: int

    def refresh_processes(self) -> int:
        """Web processes for SLATES_PER_S at the rate measured here (pessimistic: every
        process of both stacks shared 2 cores)."""
        return math.ceil(SLATES_PER_S / self.recs_per_process)


@dataclass(frozen=True)
class Model:
    keep_s: int
    reclick_s: int
    decisions_cap: int
    memory: dict[str, float]  # part -> bytes
    cpu: dict[str, float]  # part -> Redis CPU seconds per second
    commands: dict[str, float]  # part -> commands per second
    net: float  # bytes per second in and out of the masters
    broker_cpu: float
    broker_commands: float

    @property
    def masters_for_memory(self) -> int:
        return math.ceil(sum(self.memory.values()) / MEMORY_BUDGET)

    @property
    def masters_for_cpu(self) -> int:
        return math.ceil(sum(self.cpu.values()) / CORE_BUDGET)


def model(m: Measured) -> Model:
    """Memory, CPU and commands at SLATES_PER_S and EVENTS_PER_S."""
    settings = Settings.from_mapping({}, role="worker")
    keep, reclick = settings.event_keep_seconds, settings.reclick_seconds
    cap = settings.decision_log_maxlen
    clicks = EVENTS_PER_S * CLICK_SHARE
    processes = m.refresh_processes()
    memory = {
        "served slates (window + grace)": SLATES_PER_S * keep * m.served_bytes,
        "de-dup sets (window + grace)": SLATES_PER_S * keep * m.seen_keys_per_slate
        * m.seen_bytes,
        "members' clicked posts (reclick window)": clicks * reclick * m.click_bytes,
        "decision stream (capped)": cap * m.decision_bytes,
        "outcome streams, 24 h of events": EVENTS_PER_S * 86_400 * m.outcome_bytes,
    }  # fmt: skip
    cpu = {
        "serving": SLATES_PER_S * m.slate.cpu_seconds,
        "events": EVENTS_PER_S * m.event.cpu_seconds,
        "snapshot refreshes": processes * ASSUMED_FORUMS * m.refresh_cpu_s,
    }
    commands = {
        "serving": SLATES_PER_S * m.slate.commands,
        "events": EVENTS_PER_S * m.event.commands,
        "snapshot refreshes": processes * ASSUMED_FORUMS * m.refresh_commands,
    }
    net = SLATES_PER_S * (m.slate.net_in + m.slate.net_out) + EVENTS_PER_S * (
        m.event.net_in + m.event.net_out
    )
    return Model(keep, reclick, cap, memory, cpu, commands, net,
                 EVENTS_PER_S * m.broker_event.cpu_seconds,
                 EVENTS_PER_S * m.broker_event.commands)  # fmt: skip


def per_call_us(c: Counters, command: str) -> float:
    calls = c.calls.get(command, 0)
    return c.usec.get(command, 0) / calls if calls else float("nan")


def render(m: Measured) -> list[str]:
    x = model(m)
    processes = m.refresh_processes()
    masters = max(x.masters_for_memory, x.masters_for_cpu)
    out = [
        "### Capacity model: 5,000 slates/s and 50,000 events/s, 24-hour attribution window",
        "",
        "**Measured** (this run, on the cluster): the commands, bytes and Redis CPU per slate "
        "and per event above, the key sizes above, and the idle snapshot refresh: "
        f"{m.refresh_commands:.2f} commands and {1e6 * m.refresh_cpu_s:.1f} µs of Redis CPU "
        "per forum per web process per second (all of one Redis's idle CPU, its own "
        "housekeeping too, counted as refresh: an upper bound). The per-shard throughput "
        "measured here is not "
        f"Redis's: the cluster stack served {m.cluster_recs:,.0f} recommendations/s and counted "
        f"{m.cluster_events:,.0f} events/s, bounded by the 2 cores that gunicorn, Celery, wrk "
        "and all six nodes share; so the model below takes Redis's own CPU per unit of work, "
        "not those rates. **Assumed**: events are ten impressions to one click (the "
        f"benchmark's mix, so {EVENTS_PER_S * CLICK_SHARE:,.0f} clicks/s); every slate's "
        f"impressions arrive; {ASSUMED_FORUMS:,} forums with live posts; {processes} web "
        f"processes ({SLATES_PER_S:,} / {m.recs_per_process:,.0f} recommendations/s per "
        "process measured here: pessimistic); a master may use "
        f"{CORE_BUDGET:.0%} of a core and hold {MEMORY_BUDGET / GIB:.0f} GiB; the default "
        f"settings: a slate's keys live {x.keep_s:,} s (`BANDIT_ATTRIBUTION_SECONDS` + "
        f"`BANDIT_EVENT_GRACE_SECONDS`), a member's clicks {x.reclick_s:,} s "
        f"(`BANDIT_RECLICK_SECONDS`), the decision stream {x.decisions_cap:,} entries "
        "(`BANDIT_DECISION_LOG_MAXLEN`).",
        "",
        "| memory held | GiB |",
        "|---|---:|",
        *[f"| {part} | {size / GIB:,.1f} |" for part, size in x.memory.items()],
        f"| **total** | **{sum(x.memory.values()) / GIB:,.1f}** |",
        "",
        "| load on the masters | commands/s | Redis CPU (cores) |",
        "|---|---:|---:|",
        *[f"| {part} | {x.commands[part]:,.0f} | {x.cpu[part]:.2f} |" for part in x.cpu],
        f"| **total** | **{sum(x.commands.values()):,.0f}** | **{sum(x.cpu.values()):.2f}** |",
        "",
        f"Network in and out of the masters: {8 * x.net / 1e9:.2f} Gbit/s. Masters needed: "
        f"**{x.masters_for_memory}** for memory, **{x.masters_for_cpu}** for CPU, so "
        f"**{masters}** (each with a replica).",
        "",
        "Where the next limit is, beyond adding masters:",
        "",
        *_limits(m, x, processes),
        "",
    ]
    return out


def _limits(m: Measured, x: Model, processes: int) -> list[str]:
    xadd = per_call_us(m.slate, "xadd")
    return [
        f"- **Outcome streams**: each forum's stream is capped by length only "
        f"({x.decisions_cap:,} x {OUTCOMES_PER_DECISION} entries), so the memory they hold "
        f"grows with the number of forums (up to {ASSUMED_FORUMS:,} x "
        f"{x.decisions_cap * OUTCOMES_PER_DECISION:,} x {m.outcome_bytes:.0f} B = "
        f"{ASSUMED_FORUMS * x.decisions_cap * OUTCOMES_PER_DECISION * m.outcome_bytes / GIB:,.0f}"
        " GiB), not with time: a cap in time (XTRIM MINID) would bound it by the rate.",
        f"- **The broker**: {m.broker_event.commands:.2f} commands and "
        f"{1e6 * m.broker_event.cpu_seconds:.1f} µs of CPU per event on the broker's one "
        f"Redis: {x.broker_commands:,.0f} commands/s and {x.broker_cpu:.2f} cores at "
        f"{EVENTS_PER_S:,} events/s, on one process that a cluster does not spread.",
        f"- **The snapshot refresh**: every web process reads every active forum each second: "
        f"{processes} x {ASSUMED_FORUMS:,} = {processes * ASSUMED_FORUMS:,} forum reads/s, "
        f"{x.commands['snapshot refreshes']:,.0f} commands/s, growing with processes x forums, "
        "not with traffic.",
        f"- **Hot keys**: one slot takes every slate's decision-log entry (`P:decisions`: "
        f"{SLATES_PER_S:,} XADD/s at {xadd:.1f} µs each measured = "
        f"{SLATES_PER_S * xadd / 1e6:.2f} of a core), every accepted batch's journal entry "
        "(`{pending}`, with a replica's WAIT), a running experiment's slate counts "
        "(`{xres:X}`); one busy forum's counts live on one master.",
    ]
