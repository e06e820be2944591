"""``bin/bench workers``: gunicorn's worker classes side by side, with keep-alive clients.

One stack (Redis, the Celery worker, the catalogue) serves every class; only the web tier is
started again for each, with the class passed through ``GUNICORN_CMD_ARGS`` so that
gunicorn.conf.py stays the one configuration (same 2 workers, same hooks). The classes are
visited in a mirrored order (A B C C B A) so that the machine's drift falls on all alike. Each
visit measures, with wrk's keep-alive clients: ``/healthz`` and recommendations alternately
(A B B A), then both again while slow clients (:mod:`devtools.bench.slow_clients`) hold
connections open.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.catalogue import Catalogue
from devtools.bench.phases import BARE, RECOMMEND, grow, load_path, merge
from devtools.bench.probes import wait_for_snapshots
from devtools.bench.report import commit, machine
from devtools.bench.slow_clients import SlowClients
from devtools.bench.stack import Stack, loadavg
from devtools.bench.wrk import WrkResult

# gunicorn options per class. --threads 1 for sync: gunicorn turns a sync worker with more
# threads into gthread, and the configuration may one day set threads.
CLASSES = {
    "sync": "--worker-class sync --threads 1",
    "gthread": "--worker-class gthread --threads 4",
    "gevent": "--worker-class gevent",
}
ENDPOINTS = {BARE: "/healthz", RECOMMEND: "recommendations"}


@dataclass(frozen=True)
class Plan:
    candidates: int
    order: tuple[str, ...]
    seconds: float  # of each endpoint per visit, without slow clients (two halves, A B B A)
    slow_seconds: float  # of each endpoint per visit with the slow clients
    connections: int = 8
    slow_clients: int = 50


FULL = Plan(4000, ("gevent", "gthread", "sync", "sync", "gthread", "gevent"), 10.0, 5.0)
QUICK = Plan(200, ("gevent", "gthread", "sync"), 1.0, 1.0, slow_clients=10)


@dataclass(frozen=True)
class Run:
    """One endpoint's load in one visit: wrk's result and the servers' CPU over it."""

    result: WrkResult
    cpu_seconds: float


@dataclass(frozen=True)
class Visit:
    worker_class: str
    load: str
    fast: dict[str, Run]  # by path
    slow: dict[str, Run]  # the same with slow clients holding connections
    slow_cut_off: int  # slow connections the server closed meanwhile


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user and system) by process; a process that has exited is left out (a
    sync worker killed by gunicorn's timeout, say)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def timed_load(stack: Stack, path: str, seconds: float, connections: int) -> Run:
    """``path`` loaded by wrk, with the CPU the web workers and Redis used meanwhile."""
    pids = [*stack.web_pids(), *stack.store_pids()]
    before = cpu_by_pid(pids)
    result = load_path(stack, path, seconds, connections)
    after = cpu_by_pid(pids)
    return Run(result, sum(after[p] - before[p] for p in before.keys() & after.keys()))


def pool(runs: list[Run]) -> Run:
    return Run(merge([r.result for r in runs]), sum(r.cpu_seconds for r in runs))


def visit(stack: Stack, worker_class: str, plan: Plan) -> Visit:
    """Start the web tier with ``worker_class`` and measure it."""
    started = time.time()
    stack.restart_web(CLASSES[worker_class])
    wait_for_snapshots(stack.base, stack.web_pids(), after=started)
    load = loadavg()
    order = (BARE, RECOMMEND, RECOMMEND, BARE) if plan.seconds >= 2 else (BARE, RECOMMEND)
    share = plan.seconds / (len(order) / 2)
    fast: dict[str, list[Run]] = {BARE: [], RECOMMEND: []}
    for path in order:
        fast[path].append(timed_load(stack, path, share, plan.connections))
    host, port = "127.0.0.1", stack.port
    with SlowClients(host, port, plan.slow_clients) as slow_clients:
        wait_rounds(slow_clients, 2)
        slow = {p: timed_load(stack, p, plan.slow_seconds, plan.connections)
                for p in (RECOMMEND, BARE)}  # fmt: skip
        cut_off = slow_clients.cut_off
    return Visit(worker_class, load, {p: pool(r) for p, r in fast.items()}, slow, cut_off)


def wait_rounds(clients: SlowClients, rounds: int, timeout: float = 30) -> None:
    """Wait until every slow connection has sent ``rounds`` bytes (the server has them)."""
    deadline = time.monotonic() + timeout
    while clients.rounds < rounds:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the slow clients did not send {rounds} bytes in {timeout}s")
        time.sleep(clients.interval / 4)


def run(stack: Stack, plan: Plan, command: str) -> str:
    """Measure every class of ``plan.order`` on ``stack``; the Markdown section."""
    grow(stack, Catalogue.connect(stack.redis_url), plan.candidates)
    load = loadavg()
    visits = [visit(stack, c, plan) for c in plan.order]
    return render(visits, plan, command, load)


def per_request_ms(run: Run) -> str:
    return f"{1000 * run.cpu_seconds / run.result.requests:.2f}" if run.result.requests else "-"


def latency(result: WrkResult) -> str:
    return f"{result.p50_ms:.1f} / {result.p99_ms:.1f}" if result.requests else "-"


def errors(result: WrkResult) -> str:
    return f"{result.socket_errors} / {result.non2xx}"


def render(visits: list[Visit], plan: Plan, command: str, load: str) -> str:
    """The Markdown section of docs/benchmarks.md: pooled by class, then every visit."""
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    classes = list(dict.fromkeys(plan.order))
    head = [
        "## gunicorn worker classes with keep-alive clients",
        "",
        f"Machine: {machine()}, shared with other engineers' work (`/proc/loadavg` 1, 5, 15 "
        f"min at the start: {load}, and before each visit below). Date: {now}. Commit: "
        f"`{commit()}`. Command: `{command}`.",
        "",
        "Method: one stack (the Procfile's: one Celery worker, one redis-server, "
        f"{plan.candidates:,} live candidates, on 127.0.0.1); only gunicorn is started again "
        "for each worker class, with gunicorn.conf.py and 2 workers, the class given in "
        "`GUNICORN_CMD_ARGS` (" + "; ".join(f"{c}: `{CLASSES[c]}`" for c in classes) + "). "
        f"Classes visited in the order {' '.join(plan.order)}. Each visit: wrk with "
        f"{plan.connections} keep-alive connections on `/healthz` and "
        f"`GET {RECOMMEND}` alternately (A B B A, {plan.seconds:g} s of each), then "
        f"{plan.slow_seconds:g} s of each while {plan.slow_clients} slow clients hold "
        "connections (each sends a request header a byte every 0.5 s and never finishes it; "
        "one the server closes is opened again at once). Server CPU: the gunicorn workers "
        "and Redis, per request. Errors: wrk's socket errors (connect, read, write, "
        "timeouts of 10 s) / non-2xx answers. A sync worker closes every connection, so its "
        "wrk clients connect again for every request.",
        "",
    ]
    return "\n".join([*head, *_pooled(visits, classes), "", *_visits(visits)]) + "\n"


def _pooled(visits: list[Visit], classes: list[str]) -> list[str]:
    lines = [
        "| class | endpoint | req/s | p50 / p99 ms | server CPU ms/req | errors | with slow "
        "clients: req/s | p50 / p99 ms | errors | slow connections cut off |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in classes:
        mine = [v for v in visits if v.worker_class == c]
        cut = sum(v.slow_cut_off for v in mine)
        for path, name in ENDPOINTS.items():
            fast, slow = pool([v.fast[path] for v in mine]), pool([v.slow[path] for v in mine])
            lines.append(
                f"| {c} | {name} | {fast.result.rps:,.0f} | {latency(fast.result)} | "
                f"{per_request_ms(fast)} | {errors(fast.result)} | {slow.result.rps:,.0f} | "
                f"{latency(slow.result)} | {errors(slow.result)} | {cut} |"
            )
    lines += ["", "Recommendations / `/healthz` (req/s, pooled): " + ", ".join(
        f"{c} {_ratio([v for v in visits if v.worker_class == c]):.2f}" for c in classes
    ) + "."]  # fmt: skip
    return lines


def _ratio(visits: list[Visit]) -> float:
    recs = pool([v.fast[RECOMMEND] for v in visits]).result.rps
    bare = pool([v.fast[BARE] for v in visits]).result.rps
    return recs / bare if bare else float("nan")


def _visits(visits: list[Visit]) -> list[str]:
    lines = [
        "| visit | class | load | `/healthz` req/s | recs req/s | recs p50 / p99 ms | with "
        "slow clients: `/healthz` req/s | recs req/s |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for n, v in enumerate(visits, start=1):
        lines.append(
            f"| {n} | {v.worker_class} | {v.load} | {v.fast[BARE].result.rps:,.0f} | "
            f"{v.fast[RECOMMEND].result.rps:,.0f} | {latency(v.fast[RECOMMEND].result)} | "
            f"{v.slow[BARE].result.rps:,.0f} | {v.slow[RECOMMEND].result.rps:,.0f} |"
        )
    return lines
