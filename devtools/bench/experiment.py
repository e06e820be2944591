"""``bin/bench experiment``: what a running experiment of three variants costs the serving path.

In one stack, rounds without an experiment (A) and with one running (B) alternate, A B A B...,
so that the machine's load falls on both alike; each round measures the recommendations and
the bare ``/healthz`` A B B A (:func:`devtools.bench.rounds.serving_round`). Each B round
starts a new experiment and stops it (without promoting) at its end, so that the A rounds
serve the configured policy again; a round starts only once recommendations from new
connections (so both web workers) show the state it needs.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass

import requests

from devtools.bench.catalogue import Catalogue
from devtools.bench.phases import grow
from devtools.bench.probes import snapshot_times
from devtools.bench.report import commit, machine
from devtools.bench.rounds import Round, pooled_ratio, serving_round
from devtools.bench.stack import ADMIN_TOKEN, Stack, loadavg

VARIANTS: tuple[dict[str, str | float], ...] = (
    {"name": "control", "policy": "two_level_ts", "weight": 0.475},
    {"name": "recent", "policy": "recent", "weight": 0.475},
    {"name": "explore", "policy": "explore", "weight": 0.05},
)
DROP_TARGET = 0.10
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SETTLED = 8  # consecutive answers, each on a new connection, that show the wanted state


@dataclass(frozen=True)
class Comparison:
    candidates: int
    without: list[Round]
    with_experiment: list[Round]

    @property
    def drop(self) -> float:
        """How much lower the ratio to /healthz is with the experiment (0.1: 10 % lower)."""
        return 1 - pooled_ratio(self.with_experiment) / pooled_ratio(self.without)

    def round_drops(self) -> tuple[float, float]:
        """Mean and standard error of the drop of each B round against the A round before it
        (nan for the standard error of one round)."""
        drops = [1 - b.ratio / a.ratio
                 for a, b in zip(self.without, self.with_experiment, strict=True)]  # fmt: skip
        if len(drops) < 2:
            return drops[0], float("nan")
        return statistics.fmean(drops), statistics.stdev(drops) / math.sqrt(len(drops))

    def cpu_change(self) -> float:
        """Server CPU per recommendation with the experiment over without, minus 1."""

        def mean_cpu(rounds: list[Round]) -> float:
            return statistics.fmean(r.recommend_cpu_ms for r in rounds)

        return mean_cpu(self.with_experiment) / mean_cpu(self.without) - 1


def start_experiment(base: str, experiment_id: str) -> None:
    """PUT the three-variant experiment; raises RuntimeError unless it started."""
    body = json.dumps({"variants": list(VARIANTS), "control": "control"})
    answer = requests.put(f"{base}/v1/experiments/{experiment_id}", data=body, timeout=10,
                          headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    if answer.status_code != 201:
        raise RuntimeError(f"experiment not started: {answer.status_code} {answer.text}")


def stop_experiment(base: str, experiment_id: str) -> None:
    """Stop it without promoting a variant; raises RuntimeError unless it stopped."""
    answer = requests.post(f"{base}/v1/experiments/{experiment_id}/stop", json={},
                           headers=AUTH, timeout=10)  # fmt: skip
    if answer.status_code != 200:
        raise RuntimeError(f"experiment not stopped: {answer.status_code} {answer.text}")


def wait_served(base: str, in_experiment: bool, timeout: float = 30) -> None:
    """Wait until ``SETTLED`` recommendations in a row, each on a new connection, come with a
    variant (``in_experiment``) or without one, and every web process that holds a snapshot
    holds one read after this call began (a streak may come from one process alone while
    another still serves its older plan; a process with no snapshot yet reads the new one).

    Raises:
        TimeoutError: not within ``timeout`` seconds.
    """
    after, deadline = time.time(), time.monotonic() + timeout
    streak = 0
    while streak < SETTLED or not _snapshots_after(base, after):
        if time.monotonic() > deadline:
            raise TimeoutError(f"recommendations did not settle (experiment={in_experiment})")
        answer = requests.get(
            f"{base}/v1/recommendations",
            params={"user_id": f"settle{streak}", "n": "10"},
            timeout=10,
        )
        has_variant = answer.json().get("variant") is not None
        streak = streak + 1 if has_variant == in_experiment else 0
        if streak == 0:
            time.sleep(0.05)


def _snapshots_after(base: str, after: float) -> bool:
    """Whether every web process that exports a snapshot time read it after ``after``."""
    return min(snapshot_times(base).values(), default=math.inf) >= after


def compare(stack: Stack, size: int, rounds: int, seconds: float, connections: int) -> Comparison:
    """``rounds`` rounds without and with an experiment, alternately, at ``size`` candidates."""
    grow(stack, Catalogue.connect(stack.redis_url), size)
    without: list[Round] = []
    running: list[Round] = []
    for n in range(rounds):
        wait_served(stack.base, in_experiment=False)
        without.append(serving_round(stack, "no experiment", seconds, connections))
        experiment_id = f"bench-{size}-{n}-{time.time_ns()}"
        start_experiment(stack.base, experiment_id)
        try:
            wait_served(stack.base, in_experiment=True)
            running.append(serving_round(stack, "3 variants", seconds, connections))
        finally:
            stop_experiment(stack.base, experiment_id)
    return Comparison(size, without, running)


def render(comparisons: list[Comparison], command: str, load: str) -> str:
    """The Markdown section of docs/benchmarks.md."""
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    variants = ", ".join(f"{v['name']} `{v['policy']}` {v['weight']:.1%}" for v in VARIANTS)
    lines = [
        "## Serving with an experiment of three variants running",
        "",
        f"Machine: {machine()}, shared with other engineers' work (`/proc/loadavg` 1, 5, 15 "
        f"min at the start: {load}, and before each round below). Date: {now}. Commit: "
        f"`{commit()}`. Command: `{command}`.",
        "",
        "Method: one stack (the Procfile's: gunicorn with 2 workers, one Celery worker, one "
        "redis-server, on 127.0.0.1). At each size, rounds without an experiment (A) and "
        f"with one running (B: {variants}) alternate A B A B...; "
        "each round loads `/healthz` and `GET /v1/recommendations?n=10` (a new member id per "
        "request, so every variant serves) alternately A B B A with wrk. Each B round starts a "
        "new experiment (`PUT /v1/experiments/{id}`) and stops it after the round; a round "
        f"begins once {SETTLED} recommendations in a row, each on a new connection, carry "
        "the state it needs (a variant, or none). The ratio is recommendations req/s over "
        "`/healthz` req/s of the same round; *pooled* divides the requests of all rounds by "
        "their seconds. The drop is 1 - (pooled ratio with) / (pooled ratio without), "
        f"target <= {DROP_TARGET:.0%}.",
        "",
        "| candidates | round | load | experiment | bare req/s | recs req/s | ratio | recs p50 "
        "/ p99 ms | server CPU ms/recommendation |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        for n, pair in enumerate(zip(c.without, c.with_experiment, strict=True), start=1):
            lines += [_row(c.candidates, n, r) for r in pair]
    lines += ["", "| candidates | pooled ratio without | with | drop | drop per round pair, "
              "mean ± s.e. | server CPU/rec with vs without | target |",
              "|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for c in comparisons:
        ok = c.drop <= DROP_TARGET
        mean, error = c.round_drops()
        lines.append(
            f"| {c.candidates:,} | {pooled_ratio(c.without):.3f} | "
            f"{pooled_ratio(c.with_experiment):.3f} | {c.drop:+.1%} | {mean:+.1%} ± "
            f"{error:.1%} | {c.cpu_change():+.1%} | drop <= {DROP_TARGET:.0%}: "
            f"{'**met**' if ok else '**MISSED**'} |"
        )
    lines += [
        "",
        "A positive drop is a lower ratio with the experiment. The rounds move by "
        "more than the drop from one to the next on this loaded machine: the mean of the "
        "round pairs and its standard error say how far the pooled drop can be trusted.",
    ]
    return "\n".join(lines) + "\n"


def _row(size: int, n: int, r: Round) -> str:
    return (
        f"| {size:,} | {n} | {r.load} | {r.label} | {r.bare.rps:,.0f} | {r.recommend.rps:,.0f} | "
        f"{r.ratio:.3f} | {r.recommend.p50_ms:.1f} / {r.recommend.p99_ms:.1f} | "
        f"{r.recommend_cpu_ms:.2f} |"
    )


def run(stack: Stack, sizes: tuple[int, ...], rounds: int, seconds: float, command: str) -> str:
    load = loadavg()
    comparisons = [compare(stack, size, rounds, seconds, 8) for size in sizes]
    return render(comparisons, command, load)
