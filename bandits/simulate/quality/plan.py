"""What bin/quality runs: the settings, the recommenders of each experiment, the seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bandits.simulate import report
from bandits.simulate.environments import ForumConfig
from bandits.simulate.runner import (
    AgentSpec,
    ClassicSetting,
    ForumSetting,
    Job,
    LowCtrSetting,
    Outcome,
    Setting,
    run_jobs,
)

DEFAULTS = ("two_level_ts", "flat_ts", "greedy", "epsilon_greedy", "random")


@dataclass(frozen=True)
class Plan:
    """What bin/quality runs (``QUICK``: the same shape, tiny, for a smoke test)."""

    name: str
    seeds: int
    classic: ClassicSetting
    lowctr: LowCtrSetting
    forum: ForumSetting
    dense: ForumSetting
    dense_seeds: int
    forum_delay: int
    mid_delay: int
    slow_delay: int
    delay_seeds: int


FULL = Plan(
    name="full",
    seeds=20,
    classic=ClassicSetting(10, 0.1, 100_000),
    lowctr=LowCtrSetting(100, 0.03, 30.0, 100_000),
    forum=ForumSetting(ForumConfig()),
    dense=ForumSetting(ForumConfig(posts_per_visit=0.01, lifetime=20_000, visits=60_000)),
    dense_seeds=10,
    forum_delay=50,
    mid_delay=100,
    slow_delay=1000,
    delay_seeds=500,
)
QUICK = Plan(
    name="quick",
    seeds=3,
    classic=ClassicSetting(10, 0.1, 3_000),
    lowctr=LowCtrSetting(100, 0.03, 30.0, 3_000),
    forum=ForumSetting(ForumConfig(members=200, visits=1_500, lifetime=500)),
    dense=ForumSetting(ForumConfig(members=200, visits=1_500, lifetime=1_000)),
    dense_seeds=2,
    forum_delay=50,
    mid_delay=10,
    slow_delay=100,
    delay_seeds=4,
)

INDEPENDENT_SALT = 1


def classic_agents(plan: Plan) -> list[AgentSpec]:
    """Thompson sampling vs MABWiser, a short update delay, and the greedy and random floors."""
    return [
        AgentSpec("MABWiser TS", "mabwiser"),
        AgentSpec("flat_ts", "flat_ts"),
        AgentSpec("flat_ts (independent seed)", "flat_ts", seed_salt=INDEPENDENT_SALT),
        AgentSpec(f"flat_ts D={plan.mid_delay}", "flat_ts", delay=plan.mid_delay),
        AgentSpec("greedy", "greedy"),
        AgentSpec("random", "random"),
    ]


def delay_agents(plan: Plan) -> list[AgentSpec]:
    """Thompson sampling refreshed every decision, every ``slow_delay``, and the same with
    the decisions since the refresh imputed at their posterior means."""
    slow = plan.slow_delay
    return [
        AgentSpec("flat_ts", "flat_ts"),
        AgentSpec(f"flat_ts D={slow}", "flat_ts", delay=slow),
        AgentSpec(f"flat_ts D={slow} imputed", "flat_ts", delay=slow, impute_pending=True),
    ]


FLAT_LOW = "flat_ts (Beta(1, 1))"
HIER_LOW = "two_level_ts"
TOTALS = "forum totals"
HIER_LOW_TOTALS = f"two_level_ts, {TOTALS}"
NARROW = (("exploration", 0.2),)
HIER_GREEDY = (("prior_strength", 10.0),)


def lowctr_agents() -> list[AgentSpec]:
    """The hierarchical (informative) prior against Beta(1, 1), and what exploits harder."""
    return [
        AgentSpec(HIER_LOW, "two_level_ts"),
        AgentSpec(HIER_LOW_TOTALS, "two_level_ts", forum_window=None),
        AgentSpec(FLAT_LOW, "flat_ts"),
        AgentSpec("two_level_ts exploration=0.2", "two_level_ts", NARROW),
        AgentSpec("greedy prior_strength=10", "greedy", HIER_GREEDY),
    ]


def forum_agents(delay: int, full: bool) -> list[AgentSpec]:
    """The five policies at their defaults, then ablations and variants (``full`` only)."""
    agents = [AgentSpec(name, name, delay=delay) for name in DEFAULTS]
    if full:
        agents += [
            AgentSpec("two_level_ts order=sample", "two_level_ts", (("order", "sample"),), delay),
            AgentSpec(
                "two_level_ts forum_draw=false", "two_level_ts", (("forum_draw", False),), delay
            ),
            AgentSpec(HIER_LOW_TOTALS, "two_level_ts", (), delay, forum_window=None),
            AgentSpec("two_level_ts exploration=0.2", "two_level_ts", NARROW, delay),
            AgentSpec("greedy prior_strength=10", "greedy", HIER_GREEDY, delay),
            AgentSpec(
                f"greedy prior_strength=10, {TOTALS}",
                "greedy",
                HIER_GREEDY,
                delay,
                forum_window=None,
            ),
        ]
    return agents


@dataclass(frozen=True)
class Section:
    """One experiment: a setting, its recommenders and its seeds."""

    key: str
    setting: Setting
    agents: list[AgentSpec]
    seeds: int

    def jobs(self) -> list[Job]:
        """One job per (agent, seed)."""
        return [Job(self.setting, a, s) for a in self.agents for s in range(self.seeds)]


def sections(plan: Plan) -> list[Section]:
    """The five experiments of the document."""
    dense_labels = (
        "two_level_ts",
        "flat_ts",
        "greedy",
        "two_level_ts exploration=0.2",
        "greedy prior_strength=10",
        f"greedy prior_strength=10, {TOTALS}",
    )
    dense_agents = [a for a in forum_agents(plan.forum_delay, True) if a.label in dense_labels]
    return [
        Section("classic", plan.classic, classic_agents(plan), plan.seeds),
        Section("delay", plan.classic, delay_agents(plan), plan.delay_seeds),
        Section("lowctr", plan.lowctr, lowctr_agents(), plan.seeds),
        Section("forum", plan.forum, forum_agents(plan.forum_delay, True), plan.seeds),
        Section("dense", plan.dense, dense_agents, plan.dense_seeds),
    ]


Results = dict[str, dict[str, list[Outcome]]]
"""Outcomes by section key, then by recommender label (in the section's agent order)."""


def run_all(parts: Sequence[Section], processes: int) -> Results:
    """Run every job of every section in one pool; results grouped by section and label."""
    tagged = [(part.key, job) for part in parts for job in part.jobs()]
    # Longest first, so that the pool does not end on one slow job.
    tagged.sort(key=lambda item: _expected_cost(item[1]), reverse=True)
    outcomes = run_jobs([job for _, job in tagged], processes)
    grouped: dict[str, list[Outcome]] = {part.key: [] for part in parts}
    for (key, _), out in zip(tagged, outcomes, strict=True):
        grouped[key].append(out)
    return {
        key: _in_agent_order(part, grouped[key]) for key, part in zip(grouped, parts, strict=True)
    }


def _in_agent_order(part: Section, outs: list[Outcome]) -> dict[str, list[Outcome]]:
    groups = report.group(outs)
    return {a.label: groups[a.label] for a in part.agents}


def _expected_cost(job: Job) -> float:
    steps = getattr(job.setting, "horizon", 0) or job.setting.config.visits  # type: ignore[union-attr]
    weight = 3.0 if job.agent.policy == "mabwiser" else 1.0
    return steps * weight
