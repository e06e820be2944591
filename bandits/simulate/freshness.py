"""``python -m bandits.simulate freshness``: forgetting and the seen-limit, in worlds where
posts age, members tire and forums drift, and their cost in today's stationary world.

Every world of :data:`~bandits.simulate.environments.FRESHNESS_WORLDS` is run with the same
recommenders on the same seeds, so every comparison is paired by seed: ``two_level_ts``
with and without forgetting (at the recommended half-life, and half and double it),
``recent`` and ``greedy``, and ``two_level_ts`` with the seen-limit. The metric is clicks
per visit (the seen-limit changes what is shown, so clicks per impression would compare
different denominators); CTR per impression and regret are printed beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from bandits.simulate import report
from bandits.simulate.environments import FRESHNESS_WORLDS
from bandits.simulate.members import SEEN_WINDOW
from bandits.simulate.report import Paired, paired
from bandits.simulate.runner import AgentSpec, ForumSetting, Job, Outcome, run_jobs

#: The recommended half-life of forgetting, in visits (the simulator's time unit).
HALF_LIFE = 2_000.0
#: The seen-limit of the evidence: two impressions without a click.
SEEN_LIMIT = 2
BASE = "two_level_ts"
#: The smallest difference the full run must resolve: 2 % of clicks per visit.
RESOLVE = 0.02
#: Two-sided 5 % test with 80 % power: (1.96 + 0.84) ** 2.
POWER_FACTOR = (1.96 + 0.8416) ** 2


@dataclass(frozen=True)
class FreshnessPlan:
    """Worlds (their names), sizes and the recommenders' settings of one evidence run."""

    worlds: tuple[str, ...] = tuple(FRESHNESS_WORLDS)
    visits: int = 40_000
    members: int = 1_000
    half_life: float = HALF_LIFE
    seen_limit: int = SEEN_LIMIT
    seen_window: int = SEEN_WINDOW

    def agents(self) -> list[AgentSpec]:
        """Without forgetting, with it (h, h/2, 2h), recent, greedy, and the seen-limit."""
        h = self.half_life
        agents = [AgentSpec(BASE, BASE)]
        for life in (h, h / 2, 2 * h):
            agents.append(AgentSpec(f"{BASE} half_life={life:g}", BASE, (("half_life", life),)))
        agents += [AgentSpec("recent", "recent"), AgentSpec("greedy", "greedy")]
        label = f"{BASE} seen_limit={self.seen_limit}"
        agents.append(
            AgentSpec(label, BASE, seen_limit=self.seen_limit, seen_window=self.seen_window)
        )
        return agents

    def setting(self, world: str) -> ForumSetting:
        """The named world at this plan's size."""
        config = FRESHNESS_WORLDS[world]
        return ForumSetting(dataclasses.replace(config, visits=self.visits, members=self.members))


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
    parser.add_argument("--seen-limit", type=int, default=plan.seen_limit, help="seen-limit")
    parser.add_argument("--seen-window", type=int, default=plan.seen_window, help="in visits")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+n-1")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")


def run_freshness(args: argparse.Namespace) -> str:
    """Run the plan of ``args`` and return its report (Markdown)."""
    plan = FreshnessPlan(
        tuple(args.world or FRESHNESS_WORLDS), args.visits, args.members, args.half_life,
        args.seen_limit, args.seen_window,
    )  # fmt: skip
    if plan.seen_limit < 1:
        raise ValueError(f"--seen-limit must be >= 1, got {plan.seen_limit}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [Job(plan.setting(w), a, s) for w in plan.worlds for a in plan.agents() for s in seeds]
    outcomes = run_jobs(jobs, args.jobs)
    per_world = len(plan.agents()) * len(seeds)
    results = {
        world: report.group(outcomes[i * per_world : (i + 1) * per_world])
        for i, world in enumerate(plan.worlds)
    }
    return render(plan, results)


def render(plan: FreshnessPlan, results: dict[str, dict[str, list[Outcome]]]) -> str:
    """The tables (one per world), the targets and the seeds a 2 % difference needs."""
    text = [f"freshness: {plan}", ""]
    for world, groups in results.items():
        text += [f"### {world}", "", world_table(groups, plan.seen_limit), ""]
    text += ["### Targets", "", targets_table(plan, results), "", seeds_needed(plan, results)]
    return "\n".join(text)


def per_visit(out: Outcome) -> float:
    """Realised clicks per visit."""
    return out.clicks_per_visit


def world_table(groups: dict[str, list[Outcome]], limit: int) -> str:
    """Per recommender: clicks per visit, CTR, regret, the paired difference against
    ``two_level_ts`` and the share of slates repeating a post shown ``limit`` times."""
    base = groups[BASE]
    rows = []
    for label, outs in groups.items():
        p = paired(outs, base, per_visit)
        share = report.values(outs, lambda o: o.repeat_share(limit))
        rows.append(
            [
                label,
                report.mean_std(report.values(outs, per_visit), 5),
                report.mean_std(report.values(outs, report.ctr), 5),
                report.mean_std(report.values(outs, report.final_regret), 0),
                "" if outs is base else f"{p.diff:+.5f} ± {p.se:.5f} ({_pct(p)})",
                f"{share.mean():.3f}",
            ]
        )
    heads = ["recommender", "clicks/visit", "CTR", "regret", f"- {BASE} (± SE)", "repeat share"]
    return report.markdown_table(heads, rows)


def _pct(p: Paired) -> str:
    return f"{100 * (p.ratio - 1):+.1f} %"


def _comparisons(
    plan: FreshnessPlan, results: dict[str, dict[str, list[Outcome]]]
) -> list[tuple[str, str, str, str]]:
    """(target, world, row, reference row) of every comparison the targets read."""
    forget, seen = f"{BASE} half_life={plan.half_life:g}", f"{BASE} seen_limit={plan.seen_limit}"
    wanted = [
        ("ageing and drift: forgetting > none by 2 SE", "forum-fresh", forget, BASE),
        ("stationary: forgetting costs <= 2 %", "forum", forget, BASE),
        ("fatigue: seen-limit > none by 2 SE", "forum-fatigue", seen, BASE),
        ("stationary: seen-limit costs <= 2 %", "forum", seen, BASE),
    ]
    return [w for w in wanted if w[1] in results]


def targets_table(plan: FreshnessPlan, results: dict[str, dict[str, list[Outcome]]]) -> str:
    """Each target with its paired difference and whether it is met at this size."""
    rows = []
    for target, world, row, ref in _comparisons(plan, results):
        groups = results[world]
        p = paired(groups[row], groups[ref], per_visit)
        met = p.z > 2 if "2 SE" in target else p.ratio - 1 >= -RESOLVE
        measured = f"{p.diff:+.5f} ± {p.se:.5f} ({_pct(p)}, z = {p.z:+.1f})"
        if "seen-limit" in target and "fatigue" in target:
            cut = _repeat_cut(groups[row], groups[ref], plan.seen_limit)
            measured += f"; repeat share cut {100 * cut:.0f} %"
            met = met and cut >= 0.5
        rows.append([target, world, measured, "met" if met else "**missed**"])
    return report.markdown_table(["target", "world", "row - reference", "status"], rows)


def _repeat_cut(row: list[Outcome], ref: list[Outcome], limit: int) -> float:
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


def seeds_needed(plan: FreshnessPlan, results: dict[str, dict[str, list[Outcome]]]) -> str:
    """One line per comparison: the seeds a 2 % difference needs, from this run's spread."""
    lines = ["Seeds to resolve a 2 % difference in clicks per visit (5 %, 80 % power):", ""]
    for target, world, row, ref in _comparisons(plan, results):
        groups = results[world]
        p = paired(groups[row], groups[ref], per_visit)
        mean = float(report.values(groups[ref], per_visit).mean())
        lines.append(f"- {target} ({world}): {needed_seeds(p, mean)}")
    return "\n".join(lines)
