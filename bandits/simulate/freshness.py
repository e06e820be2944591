"""``python -m bandits.simulate freshness``: forgetting and the seen-limit, in worlds where
posts age, members tire and forums drift, and their cost in today's stationary world.

Every world of :data:`~bandits.simulate.environments.FRESHNESS_WORLDS` is run with the same
recommenders on the same seeds, so every comparison is paired by seed: ``two_level_ts``
with and without forgetting (at the recommended half-life, and half and double it),
``recent`` and ``greedy``, and ``two_level_ts`` with the seen-limit. The metric is clicks
per visit (the seen-limit changes what is shown, so clicks per impression would compare
different denominators); CTR per impression and regret are shown beside it.

``--write docs/quality.md`` puts the result in that document's "Freshness" section (and
the raw outcomes beside it); ``--minutes`` bounds the wall time: the runs the targets read
start first, and a run not started in time is left out and counted as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bandits.simulate import report
from bandits.simulate.environments import FRESHNESS_WORLDS
from bandits.simulate.members import SEEN_WINDOW
from bandits.simulate.report import Paired
from bandits.simulate.runner import AgentSpec, ForumSetting, Job, Outcome, run_jobs_until

#: The recommended half-life of forgetting, in visits (the simulator's time unit): chosen on
#: design seeds 1000-1003 among 3,000, 4,000 and 6,000 after 2,000 (the first choice) cost
#: 2.1 % in the stationary world on the first evaluation seeds (100-107).
HALF_LIFE = 4_000.0
#: The seen-limit of the evidence: the service's default (``BANDIT_SEEN_LIMIT``), three
#: impressions without a click.
SEEN_LIMIT = 3
#: Evaluation seeds start here; seeds 1000 and up are for design (never evaluated). Seeds
#: 100-107 evaluated the first half-life (2,000); they saw it chosen again, so the evidence for
#: the half-life chosen after them uses new seeds.
FIRST_SEED = 200
BASE = "two_level_ts"
#: The smallest difference the full run must resolve: 2 % of clicks per visit.
RESOLVE = 0.02
#: Two-sided 5 % test with 80 % power: (1.96 + 0.84) ** 2.
POWER_FACTOR = (1.96 + 0.8416) ** 2

#: world -> recommender label -> outcomes sorted by seed (a label may have none).
Results = dict[str, dict[str, list[Outcome]]]


@dataclass(frozen=True)
class Target:
    """One target of the evidence: ``row`` against ``reference`` in ``world``; ``kind``
    is ``"beats"`` (by more than two standard errors) or ``"costs"`` (at most 2 %), or
    ``"reports"``: a cost the issue asks to see without bounding it (read as "costs")."""

    name: str
    world: str
    row: str
    reference: str
    kind: str
    repeat_cut: bool = False


@dataclass(frozen=True)
class FreshnessPlan:
    """Worlds (their names), sizes, seeds and the recommenders' settings of one run."""

    worlds: tuple[str, ...] = tuple(FRESHNESS_WORLDS)
    visits: int = 40_000
    members: int = 1_000
    half_life: float = HALF_LIFE
    seen_limit: int = SEEN_LIMIT
    seen_window: int = SEEN_WINDOW
    seeds: int = 20
    first_seed: int = FIRST_SEED

    def __post_init__(self) -> None:
        unknown = [w for w in self.worlds if w not in FRESHNESS_WORLDS]
        if unknown or not self.worlds:
            raise ValueError(f"worlds must be among {list(FRESHNESS_WORLDS)}, got {unknown}")
        if self.seen_limit < 1 or self.seeds < 1 or not self.half_life > 0:
            raise ValueError(
                f"--seen-limit and --seeds must be >= 1 and --half-life > 0, got {self}"
            )

    @property
    def forget(self) -> str:
        """Label of the row with forgetting at the recommended half-life."""
        return f"{BASE} half_life={self.half_life:g}"

    @property
    def seen(self) -> str:
        """Label of the row with the seen-limit."""
        return f"{BASE} seen_limit={self.seen_limit}"

    def agents(self) -> list[AgentSpec]:
        """Without forgetting, with it (h, h/2, 2h), recent, greedy, and the seen-limit."""
        h = self.half_life
        agents = [AgentSpec(BASE, BASE)]
        for life in (h, h / 2, 2 * h):
            agents.append(AgentSpec(f"{BASE} half_life={life:g}", BASE, (("half_life", life),)))
        agents += [AgentSpec("recent", "recent"), AgentSpec("greedy", "greedy")]
        agents.append(
            AgentSpec(self.seen, BASE, seen_limit=self.seen_limit, seen_window=self.seen_window)
        )
        return agents

    def setting(self, world: str) -> ForumSetting:
        """The named world at this plan's size."""
        config = FRESHNESS_WORLDS[world]
        return ForumSetting(dataclasses.replace(config, visits=self.visits, members=self.members))

    def seed_range(self) -> range:
        """The evaluation seeds."""
        return range(self.first_seed, self.first_seed + self.seeds)

    def targets(self) -> list[Target]:
        """The issue's targets whose world this plan runs."""
        wanted = [
            Target("ageing and drift: forgetting > none by 2 SE", "forum-ageing-drift",
                   self.forget, BASE, "beats"),
            Target("stationary: forgetting costs <= 2 %", "forum", self.forget, BASE, "costs"),
            Target("fatigue: seen-limit > none by 2 SE, repeats cut >= half", "forum-fatigue",
                   self.seen, BASE, "beats", repeat_cut=True),
            Target("stationary: the seen-limit's cost (shown, no bound set)", "forum", self.seen,
                   BASE, "reports"),
        ]  # fmt: skip
        return [t for t in wanted if t.world in self.worlds]

    def jobs(self) -> list[Job]:
        """Every run, in the order they start: first the rows the targets read, for every
        seed, then the other rows seed by seed (so a time budget cuts the context first)."""
        core = {(t.world, row) for t in self.targets() for row in (t.row, t.reference)}
        every = [(w, a) for w in self.worlds for a in self.agents()]
        first = [(w, a) for w, a in every if (w, a.label) in core]
        rest = [(w, a) for w, a in every if (w, a.label) not in core]
        jobs = [Job(self.setting(w), a, s) for s in self.seed_range() for w, a in first]
        return jobs + [Job(self.setting(w), a, s) for s in self.seed_range() for w, a in rest]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``freshness`` subcommand."""
    plan = FreshnessPlan()
    parser.add_argument("--world", action="append", choices=tuple(FRESHNESS_WORLDS),
                        help="repeatable (default: every world)")  # fmt: skip
    parser.add_argument("--visits", type=int, default=plan.visits, help="visits per run")
    parser.add_argument("--members", type=int, default=plan.members, help="members")
    parser.add_argument(
        "--half-life",
        type=float,
        default=plan.half_life,
        help=f"recommended half-life in visits (default {plan.half_life:g})",
    )
    parser.add_argument(
        "--seen-limit", type=int, default=plan.seen_limit, help="seen-limit (default 3)"
    )
    parser.add_argument("--seen-window", type=int, default=plan.seen_window, help="in visits")
    parser.add_argument("--seeds", type=int, default=plan.seeds, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=plan.first_seed,
                        help=f"seeds first..first+n-1 (default {plan.first_seed})")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--minutes", type=float, help="start no run after this many minutes (default: no limit)"
    )
    parser.add_argument(
        "--write",
        type=Path,
        metavar="DOC",
        help="write the Freshness section of DOC (e.g. docs/quality.md) and save the outcomes "
        "beside it (docs/quality-freshness.json)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="OUTCOMES.json",
        help="run nothing: rewrite the section of --write from saved outcomes",
    )


def plan_from(args: argparse.Namespace) -> FreshnessPlan:
    """The plan the options describe.

    Raises:
        ValueError: for an invalid option.
    """
    return FreshnessPlan(
        tuple(args.world or FRESHNESS_WORLDS), args.visits, args.members, args.half_life,
        args.seen_limit, args.seen_window, args.seeds, args.first_seed,
    )  # fmt: skip


def run_plan(plan: FreshnessPlan, processes: int, minutes: float | None = None) -> Results:
    """Every run of ``plan`` that starts within ``minutes`` (``None``: all of them)."""
    jobs = plan.jobs()
    deadline = None if minutes is None else time.time() + 60 * minutes
    outcomes = run_jobs_until(jobs, processes, deadline)
    results: Results = {w: {a.label: [] for a in plan.agents()} for w in plan.worlds}
    names: dict[object, str] = {plan.setting(w): w for w in plan.worlds}
    for job, out in zip(jobs, outcomes, strict=True):
        if out is not None:
            results[names[job.setting]][out.label].append(out)
    for groups in results.values():
        for outs in groups.values():
            outs.sort(key=lambda o: o.seed)
    return results


def run_freshness(args: argparse.Namespace) -> str:
    """Run the plan of ``args`` and return its tables and targets (Markdown)."""
    plan = plan_from(args)
    results = run_plan(plan, args.jobs, args.minutes)
    return "\n".join([f"freshness: {plan}", "", body(plan, results)])


def body(plan: FreshnessPlan, results: Results) -> str:
    """The targets, the seeds a 2 % difference needs, and one table per world."""
    text = ["### Targets", "", targets_table(plan, results), "", seeds_needed(plan, results)]
    for world, groups in results.items():
        text += ["", f"### {world}", "", world_table(groups, plan.seen_limit)]
    return "\n".join(text)


def per_visit(out: Outcome) -> float:
    """Realised clicks per visit."""
    return out.clicks_per_visit


def common(row: list[Outcome], ref: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """The runs of ``row`` and ``ref`` on the seeds both have, in seed order."""
    seeds = {o.seed for o in row} & {o.seed for o in ref}
    return [o for o in row if o.seed in seeds], [o for o in ref if o.seed in seeds]


def compare(row: list[Outcome], ref: list[Outcome]) -> Paired:
    """Clicks per visit of ``row`` minus ``ref``, paired on their common seeds."""
    a, b = common(row, ref)
    if not a:
        return Paired(math.nan, math.nan, math.nan, 0)
    return report.paired(a, b, per_visit)


def _se(xs: np.ndarray) -> float:
    return float(xs.std(ddof=1) / math.sqrt(xs.shape[0])) if xs.shape[0] > 1 else math.nan


def world_table(groups: dict[str, list[Outcome]], limit: int) -> str:
    """Per recommender: seeds, clicks per visit ± SE, the paired difference against
    ``two_level_ts`` ± SE, CTR, regret and the share of slates repeating a post the member
    was shown ``limit`` times or more."""
    base = groups[BASE]
    rows = []
    for label, outs in groups.items():
        if not outs:
            rows.append([label, "0", "not run", "", "", "", ""])
            continue
        clicks = report.values(outs, per_visit)
        p = compare(outs, base)
        diff = "" if label == BASE else f"{p.diff:+.5f} ± {p.se:.5f} ({_pct(p)}, n={p.n})"
        rows.append([
            label, str(len(outs)), f"{clicks.mean():.5f} ± {_se(clicks):.5f}", diff,
            f"{report.values(outs, report.ctr).mean():.5f}",
            f"{report.values(outs, report.final_regret).mean():.0f}",
            f"{report.values(outs, lambda o: o.repeat_share(limit)).mean():.4f}",
        ])  # fmt: skip
    heads = ["recommender", "seeds", "clicks/visit (± SE)", f"- {BASE} (± SE, paired)",
             "CTR", "regret", f"slates repeating a post shown >= {limit} times"]  # fmt: skip
    return report.markdown_table(heads, rows)


def _pct(p: Paired) -> str:
    return f"{100 * (p.ratio - 1):+.1f} %"


@dataclass(frozen=True)
class Verdict:
    """A target's measurement: the paired difference, the repeat cut if it reads one, and
    whether it is met (``None``: fewer than two common seeds, not measured)."""

    target: Target
    paired: Paired
    cut: float | None
    met: bool | None


def verdict(target: Target, results: Results, limit: int) -> Verdict:
    """Whether ``target`` is met by ``results``."""
    groups = results[target.world]
    p = compare(groups[target.row], groups[target.reference])
    cut = None
    if target.repeat_cut:
        a, b = common(groups[target.row], groups[target.reference])
        cut = repeat_cut(a, b, limit) if a else None
    if p.n < 2:
        return Verdict(target, p, cut, None)
    met = p.z > 2 if target.kind == "beats" else p.ratio - 1 >= -RESOLVE
    if cut is not None:
        met = met and cut >= 0.5
    return Verdict(target, p, cut, bool(met))


def targets_table(plan: FreshnessPlan, results: Results) -> str:
    """Each target with its paired difference and whether it is met."""
    rows = []
    for t in plan.targets():
        v = verdict(t, results, plan.seen_limit)
        p = v.paired
        measured = f"{p.diff:+.5f} ± {p.se:.5f} ({_pct(p)}, z = {p.z:+.1f}, {p.n} seeds)"
        if v.cut is not None:
            measured += f"; repeating slates cut by {100 * v.cut:.0f} %"
        status = "not measured" if v.met is None else "met" if v.met else "**missed**"
        if t.kind == "reports" and v.met is not None:
            status = "within 2 %" if v.met else "more than 2 %"
        if t.kind != "beats" and v.met and _cost_not_excluded(v.paired, _mean(t, results)):
            status += " (a 2 % cost is within 2 SE)"
        rows.append([t.name, t.world, f"`{t.row}` - `{t.reference}`: {measured}", status])
    return report.markdown_table(["target", "world", "row - reference", "status"], rows)


def _cost_not_excluded(p: Paired, reference: float) -> bool:
    """Whether a cost of 2 % of ``reference`` lies within two standard errors of ``p``."""
    return bool(p.diff - 2 * p.se <= -RESOLVE * reference)


def _mean(target: Target, results: Results) -> float:
    """Mean clicks per visit of the target's reference, on the seeds both rows have."""
    groups = results[target.world]
    ref = report.values(common(groups[target.reference], groups[target.row])[0], per_visit)
    return float(ref.mean()) if ref.shape[0] else 0.0


def repeat_cut(row: list[Outcome], ref: list[Outcome], limit: int) -> float:
    """1 - (share of slates repeating a post shown ``limit`` times in ``row``) / (in ``ref``)."""
    before = report.values(ref, lambda o: o.repeat_share(limit)).mean()
    after = report.values(row, lambda o: o.repeat_share(limit)).mean()
    return float(1.0 - after / before) if before > 0 else 0.0


def needed_seeds(p: Paired, mean: float) -> int:
    """Paired seeds for a two-sided 5 % test to detect a difference of 2 % of ``mean`` with
    80 % power, from the paired standard deviation (``se * sqrt(n)``) of a pilot run."""
    sd = p.se * math.sqrt(p.n)
    if not np.isfinite(sd) or mean <= 0:
        return 0
    return max(2, math.ceil(POWER_FACTOR * (sd / (RESOLVE * mean)) ** 2))


def seeds_needed(plan: FreshnessPlan, results: Results) -> str:
    """One line per target: the seeds a 2 % difference needs, from this run's spread."""
    lines = ["Seeds to resolve a 2 % difference in clicks per visit (two-sided 5 %, 80 % "
             "power), from the paired spread measured here:", ""]  # fmt: skip
    for t in plan.targets():
        groups = results[t.world]
        p = compare(groups[t.row], groups[t.reference])
        mean = _mean(t, results)
        sd = p.se * math.sqrt(p.n) if p.n > 1 else math.nan
        share = 100 * sd / mean if mean else math.nan
        need = needed_seeds(p, mean) if p.n > 1 else "unknown"
        lines.append(
            f"- {t.name} ({t.world}): paired sd per seed {sd:.5f} ({share:.2f} % of "
            f"{mean:.4f}): {need} seeds (this run: {p.n})"
        )
    return "\n".join(lines)
