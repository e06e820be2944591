"""``python -m bandits.simulate quality``: the evidence in docs/quality.md, regenerated.

Every number in the document is computed here from the runs; the sentences that depend on
a result (met or missed, above or below) are chosen from the numbers, never written in
advance.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bandits.simulate import report
from bandits.simulate.environments import ForumConfig
from bandits.simulate.provenance import header_lines
from bandits.simulate.recommenders import FORUM_WINDOW
from bandits.simulate.report import Paired, ctr, final_regret, paired
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

COMMAND = "bin/quality"
DEFAULTS = ("two_level_ts", "flat_ts", "greedy", "epsilon_greedy", "random")


@dataclass(frozen=True)
class Plan:
    """What bin/quality runs (``QUICK``: the same shape, tiny, for a smoke test)."""

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


def run_all(parts: Sequence[Section], processes: int) -> dict[str, dict[str, list[Outcome]]]:
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


# ---------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Target:
    """One line of the summary: what was asked, what was measured, met or not."""

    name: str
    measured: str
    met: bool


def _status(met: bool) -> str:
    return "met" if met else "**missed**"


def render(
    plan: Plan,
    results: dict[str, dict[str, list[Outcome]]],
    paths: tuple[Path, Path],
    header: list[str],
) -> str:
    """The whole markdown document (``paths``: image folder and document)."""
    img, doc = paths
    classic_text, classic_targets = render_classic(plan, results["classic"], img, doc)
    delay_text, delay_targets = render_delay(plan, results["delay"], img, doc)
    low_text, low_targets = render_lowctr(plan.lowctr, results["lowctr"], img, doc)
    forum_text, forum_targets = render_forum("forum", plan, results["forum"], img, doc)
    dense_text, dense_targets = render_forum("dense", plan, results["dense"], img, doc)
    targets = classic_targets + delay_targets + low_targets + forum_targets + dense_targets
    rows = [[t.name, t.measured, _status(t.met)] for t in targets]
    parts = [
        "# Quality evidence for `bandits/`",
        "",
        "Generated by `bin/quality` (`python -m bandits.simulate quality`); do not edit by hand.",
        "",
        *header,
        "",
        "## Targets",
        "",
        report.markdown_table(["target", "measured", "status"], rows),
        "",
        RULE_TEXT,
        METHOD_TEXT.format(seeds_m1=plan.seeds - 1),
        classic_text,
        delay_text,
        low_text,
        forum_text,
        dense_text,
    ]
    return "\n".join(parts) + "\n"


RULE_TEXT = """## The two-level rule (`two_level_ts`)

For one request with eligible posts E (allowed forums, minus excluded posts):

1. **Forum draw.** For every forum f, draw theta_f ~ Beta(alpha_f, beta_f), the forum's
   posterior: a prior centred on the global posterior mean (global prior Beta(1, 1)) with
   `forum_prior_strength` = 10 pseudo-impressions, plus the forum's clicks and impressions.
   The forum's counts cover each post's first 20 impressions only (the service's
   `BANDIT_FORUM_WINDOW`), so the forum CTR is that of a typical post, not of the posts
   the policy already shows most.
2. **Post draw.** For every post p in E, of forum f, draw
   theta_p ~ Beta(s * theta_f + clicks_p, s * (1 - theta_f) + impressions_p - clicks_p),
   s = `prior_strength` = 10. The post's prior is centred on its forum's *sampled* CTR:
   one forum draw moves all of that forum's posts together, each post's own draw ranks
   it against every other post.
3. **Choose** the n posts of E with the largest theta_p, skipping a post whose forum
   already holds `per_forum_cap` posts of the slate.
4. **Order** the chosen posts by posterior mean (alpha / (alpha + beta) with the prior
   centred on theta_f), best first: the draw decides *which* posts are shown (exploration),
   the current belief decides *where* (lower slots are seen less, so an exploratory pick
   costs least there). `order="sample"` keeps the order of the draws.

`exploration` (default 1) scales the variance of the post draw: theta_p is drawn from
Beta(alpha / e, beta / e), same mean, about e times the variance; the rows with
`exploration=0.2` show what exploring less buys and costs.

The draws are one vectorised `Generator.beta` over the forums and one over E, then one
`argpartition` and a sort of the n chosen; nothing loops over posts. Steps 1-2 are one
draw from the joint posterior of the hierarchical model (forum CTR, then post CTR given
the forum CTR). The ablation rows below (`order=sample`, `forum_draw=false`, forum totals)
show what steps 1 and 4 and the forum window contribute.
"""

METHOD_TEXT = """## Method

- Every setting is generated from its seed before any policy runs, so all policies (and
  MABWiser) meet the same arms, posts, members, visits and click uniforms; comparisons are
  paired by seed (mean of per-seed differences, ± its standard error). Seeds 0-{seeds_m1}
  (the forum's dense variant: fewer; the update delay: more). Design choices were
  explored on seeds 1000-1005, which are not used here.
- Regret is cumulative *expected* regret, from the true means: sum over steps of
  (best mean - mean of the chosen arm); in the forum world, the expected clicks of the
  oracle slate (best eligible live posts by true CTR, same cap) minus those of the slate
  shown. CTR is realised clicks per impression.
- `flat_ts` is Thompson sampling with Beta(1, 1) per arm; the single-pull settings put
  every arm in one forum, so `two_level_ts` there is Thompson sampling with a prior
  centred on the pooled CTR (strength 10).
"""


def render_classic(
    plan: Plan, groups: dict[str, list[Outcome]], img: Path, doc: Path
) -> tuple[str, list[Target]]:
    """Section: TS vs MABWiser, Lai-Robbins, update delay."""
    setting = plan.classic
    ts, mab = groups["flat_ts"], groups["MABWiser TS"]
    indep = groups["flat_ts (independent seed)"]
    same, other = paired(ts, mab, final_regret), paired(indep, mab, final_regret)
    mid = paired(groups[f"flat_ts D={plan.mid_delay}"], ts, final_regret)
    bound = ts[0].bound or 0.0
    mean_ts = float(report.values(ts, final_regret).mean())
    identical = sum(a.final_regret == b.final_regret for a, b in zip(ts, mab, strict=True))
    slope = _log_slope(ts)
    per_step = 1e6 * float(np.median([o.seconds for o in mab])) / setting.horizon
    plot = img / "classic_regret.png"
    curves = {k: v for k, v in groups.items() if k not in ("random", "greedy")}
    constant = bound / np.log(setting.horizon) if setting.horizon > 1 else 0.0
    report.plot_regret(
        curves,
        plot,
        f"K={setting.arms}, eps={setting.epsilon}: mean regret over {len(ts)} seeds",
        lambda t: constant * np.log(np.maximum(t, 1.0)),
    )
    below = mean_ts < bound
    text = [
        f"## Classic Bernoulli bandit (Chapelle & Li): K={setting.arms}, "
        f"eps={setting.epsilon}, T={setting.horizon:,}",
        "",
        report.summary_table(groups, "MABWiser TS"),
        "",
        f"![regret over time]({_rel(plot, doc)})",
        "",
        "How MABWiser was run: `MAB(arms=list(range(K)), "
        "learning_policy=LearningPolicy.ThompsonSampling(), seed=s)`, `fit` on empty data "
        "(every arm Beta(1, 1)), then at every step one `predict()` and one "
        "`partial_fit([arm], [reward])`: no batching, no delay "
        f"({per_step:.0f} us per step on this machine). The reward of step t is "
        "u_t < mu_arm with the seed's shared uniforms u, for both libraries.",
        "",
        f"- Same seeds: MABWiser and `flat_ts` are given the same integer seed for their "
        f"`numpy` Generator. Both draw Beta(1 + clicks, 1 + misses) arm by arm from that "
        f"Generator and take the argmax, so their decisions coincide: identical final regret "
        f"on {identical} of {len(ts)} seeds; ratio {same.ratio:.3f}.",
        f"- Independent seeds (same environments, `flat_ts` on another random stream): ratio "
        f"{other.ratio:.3f}, paired difference {other.diff:+.1f} ± {other.se:.1f} "
        f"(z = {other.z:.2f}); {_noise_sentence(other)}",
        f"- Lai-Robbins: sum over suboptimal arms of Delta_i / KL(mu_i, mu*) = {constant:.2f}, "
        f"times ln T = {bound:.1f} at T = {setting.horizon:,}. Mean TS regret {mean_ts:.1f} is "
        f"{'below' if below else 'above'} it. The regret grew by {slope:.1f} per unit of "
        f"ln t over the last decade of steps (T/10 to T), against the asymptotic "
        f"{constant:.1f}. {_bound_sentence(below, slope, constant, setting.horizon)}",
        f"- Update delay: with posteriors refreshed every {plan.mid_delay} decisions, regret "
        f"is {mid.ratio:.3f} x that of D=1 (paired difference {mid.diff:+.1f} ± {mid.se:.1f}). "
        f"Every {plan.slow_delay} decisions: the next section, on {plan.delay_seeds} seeds.",
        _tail_line("greedy", groups["greedy"], ts, "flat_ts"),
        "",
    ]
    targets = [
        Target(
            "Classic: TS regret within 1.05x of MABWiser TS, same seeds",
            f"{same.ratio:.3f} (independent streams: {other.ratio:.3f} ± "
            f"{_ratio_se(other, mab):.3f})",
            same.ratio <= 1.05,
        ),
        Target(
            "Classic: TS regret below the Lai-Robbins bound at T",
            f"{mean_ts:.1f} vs {bound:.1f}",
            below,
        ),
    ]
    return "\n".join(text), targets


@dataclass(frozen=True)
class Ratio:
    """A ratio of mean regrets paired by seed, with its delta-method standard error, and
    the paired difference it came from."""

    value: float
    se: float
    diff: Paired

    @classmethod
    def of(cls, a: list[Outcome], b: list[Outcome]) -> Ratio:
        """mean(a) / mean(b) over the same seeds."""
        p = paired(a, b, final_regret)  # checks the seeds
        va, vb = report.values(a, final_regret), report.values(b, final_regret)
        resid = va - p.ratio * vb
        return cls(p.ratio, float(resid.std(ddof=1) / np.sqrt(p.n) / vb.mean()), p)

    def text(self) -> str:
        """``ratio ± se`` and the 95 % interval."""
        lo, hi = self.value - 1.96 * self.se, self.value + 1.96 * self.se
        return f"{self.value:.3f} ± {self.se:.3f} (95 %: {lo:.3f}-{hi:.3f})"


def render_delay(
    plan: Plan, groups: dict[str, list[Outcome]], img: Path, doc: Path
) -> tuple[str, list[Target]]:
    """Section: refreshing every ``slow_delay`` decisions, on many seeds."""
    setting, d = plan.classic, plan.slow_delay
    ts, slow = groups["flat_ts"], groups[f"flat_ts D={d}"]
    imputed = groups[f"flat_ts D={d} imputed"]
    plain, guess = Ratio.of(slow, ts), Ratio.of(imputed, ts)
    gain = paired(imputed, slow, final_regret)
    plot = img / "delay_regret.png"
    report.plot_regret(
        groups, plot, f"K={setting.arms}, eps={setting.epsilon}: mean regret over {len(ts)} seeds"
    )
    text = [
        f"## Update delay: posteriors refreshed every {d} decisions "
        f"(K={setting.arms}, eps={setting.epsilon}, T={setting.horizon:,}, {len(ts)} seeds)",
        "",
        f"On 20 seeds the standard error of the regret ratio would be about "
        f"{plain.se * np.sqrt(len(ts) / 20):.3f} (scaled from the plain ratio's below), "
        f"too coarse for a 10 % target, so this comparison runs on {len(ts)} seeds "
        f"(0-{len(ts) - 1}). "
        f"`flat_ts D={d}` sees counts refreshed every {d} decisions and nothing in between. "
        f"`imputed` is the same policy and refresh, but the policy also counts each decision "
        f"made since the last refresh (the arm it pulled, whose reward it does not have yet) "
        f"as one pull with the arm's posterior mean as reward: the mean stays, the posterior "
        f"narrows, so a batch does not keep drawing an arm for a chance it has already been "
        f"given (the hallucinated observations of batch Bayesian optimisation). It uses only "
        f"what a delayed system knows: its own decisions.",
        "",
        report.summary_table(groups, "flat_ts"),
        "",
        f"![regret over time, delayed]({_rel(plot, doc)})",
        "",
        f"- Regret ratio to D=1: {plain.text()} plain; {guess.text()} imputed (ratio ± "
        "standard error by the delta method, paired by seed).",
        f"- Imputing the pending decisions changes regret by {gain.diff:+.1f} ± {gain.se:.1f} "
        f"(z = {gain.z:.1f}) against the plain delayed policy.",
        f"- {_delay_sentence(plan, ts, slow, plain.diff.se)}",
        "",
    ]
    targets = [
        Target(
            f"Delay: regret D={d} within 1.10x of D=1 (pending decisions imputed)",
            guess.text(),
            guess.value <= 1.10,
        ),
        Target(
            "Delay: the same, nothing imputed (plain delayed Thompson sampling)",
            plain.text(),
            plain.value <= 1.10,
        ),
    ]
    return "\n".join(text), targets


def _delay_sentence(plan: Plan, ts: list[Outcome], slow: list[Outcome], se: float) -> str:
    """Where the delay costs: the first batch, decided blind, against the rest of the run."""
    setting, d = plan.classic, plan.slow_delay
    mean_gap = setting.epsilon * (setting.arms - 1) / setting.arms
    early, total = _curve_at(ts, d), _curve_at(ts, setting.horizon)
    slow_early, slow_total = _curve_at(slow, d), _curve_at(slow, setting.horizon)
    blind = d * mean_gap
    share = (blind - early) / total
    later = (slow_total - slow_early) - (total - early)
    head = (
        f"Before the first refresh every arm is still Beta(1, 1), so the first {d} decisions "
        f"are blind for any policy and cost {blind:.0f} in expectation (D x the mean gap "
        f"{mean_gap:.3f}; measured {slow_early:.0f}), where D=1 spends {early:.0f}: that "
        f"alone is {100 * share:.0f} % of the D=1 regret at T, of the 10 % the target allows. "
        f"From step {d} to T the delayed policy adds {slow_total - slow_early:.0f} and D=1 adds "
        f"{total - early:.0f} ({later:+.0f}). "
    )
    if share > 0.10:
        return head + (
            "So no policy refreshed this rarely meets the target here unless it beats "
            "undelayed Thompson sampling after its blind start."
        )
    budget = 0.10 * total - (blind - early)
    return head + (
        f"So the target leaves {budget:.0f} for the other {setting.horizon - d:,} decisions, "
        f"where the delayed policy's extra is of the order of the paired difference's "
        f"standard error ({se:.1f})."
        if later <= 3 * se
        else f"So the target leaves {budget:.0f} for the other {setting.horizon - d:,} "
        "decisions, and the delayed policy's extra there is larger than that."
    )


def _curve_at(outs: list[Outcome], step: int) -> float:
    """Mean regret over seeds at ``step`` (interpolated between checkpoints)."""
    curve = np.mean(np.stack([o.regret for o in outs]), axis=0)
    return float(np.interp(step, outs[0].at, curve))


def _ratio_se(p: Paired, reference: list[Outcome]) -> float:
    return p.se / float(report.values(reference, final_regret).mean())


def _noise_sentence(p: Paired) -> str:
    if abs(p.z) <= 2:
        return "the two implementations are indistinguishable within two standard errors."
    better = "lower" if p.diff < 0 else "higher"
    return f"`flat_ts` regret is {better} by more than two standard errors."


def _bound_sentence(below: bool, slope: float, constant: float, horizon: int) -> str:
    if below and slope < constant:
        return (
            "This does not contradict Lai and Robbins: the bound is asymptotic "
            "(lim inf R(T) / ln T >= the constant), a statement about the slope as T grows, "
            f"not a finite-time floor; at T = {horizon:,} the regret is still below the "
            "asymptotic line and its local slope has not yet reached the constant."
        )
    if below:
        return (
            "This does not contradict Lai and Robbins: the bound is asymptotic and allows "
            "any finite offset; the local slope already matches or exceeds the constant."
        )
    return "Regret is above the asymptotic line at this horizon."


def _log_slope(outs: list[Outcome]) -> float:
    """Mean increase of regret per unit of ln t between T/10 and T."""
    at = outs[0].at
    curve = np.mean(np.stack([o.regret for o in outs]), axis=0)
    start = int(np.searchsorted(at, at[-1] / 10))
    return float((curve[-1] - curve[start]) / np.log(at[-1] / at[start]))


def render_lowctr(
    setting: LowCtrSetting, groups: dict[str, list[Outcome]], img: Path, doc: Path
) -> tuple[str, list[Target]]:
    """Section: informative hierarchical prior vs Beta(1, 1) at low CTR."""
    flat = groups[FLAT_LOW]
    plot = img / "lowctr_regret.png"
    a0 = setting.mean * setting.concentration
    b0 = setting.concentration - a0
    report.plot_regret(groups, plot, f"K={setting.arms} low-CTR arms: mean regret")
    bound = float(np.mean([o.bound or 0.0 for o in flat]))
    lines = [
        _cut_line(label, groups[label], flat, setting) for label in (HIER_LOW, HIER_LOW_TOTALS)
    ]
    lines += [
        _tail_line(label, groups[label], groups[HIER_LOW])
        for label in groups
        if label not in (HIER_LOW, HIER_LOW_TOTALS, FLAT_LOW)
    ]
    cut = paired(groups[HIER_LOW], flat, final_regret)
    target = Target(
        f"Low CTR K={setting.arms}: informative prior cuts regret >= 15 % vs Beta(1, 1)",
        f"{100 * (1 - cut.ratio):.1f} % (± {100 * cut.se / _mean(flat):.1f})",
        1 - cut.ratio >= 0.15,
    )
    text = [
        f"## Low CTR: K={setting.arms} arms, CTRs ~ Beta({a0:g}, {b0:g}) "
        f"(mean {100 * setting.mean:g} %), T={setting.horizon:,}",
        "",
        report.summary_table(groups, FLAT_LOW),
        "",
        f"![regret over time]({_rel(plot, doc)})",
        "",
        *lines,
        "",
        LOWCTR_TEXT.format(window=FORUM_WINDOW, bound=bound),
    ]
    return "\n".join(text), [target]


def _cut_line(label: str, hier: list[Outcome], flat: list[Outcome], setting: LowCtrSetting) -> str:
    diff = paired(hier, flat, final_regret)
    wins = sum(a.final_regret < b.final_regret for a, b in zip(hier, flat, strict=True))
    early = _cut_at(hier, flat, setting.horizon // 10)
    return (
        f"- {label}: regret cut by {100 * (1 - diff.ratio):.1f} % against Beta(1, 1) at T "
        f"(paired difference {diff.diff:+.1f} ± {diff.se:.1f}; lower on {wins} of {len(hier)} "
        f"seeds); at T/10 the cut is {100 * early:.1f} %."
    )


def _tail_line(label: str, outs: list[Outcome], ts: list[Outcome], name: str = HIER_LOW) -> str:
    """How a policy that explores less than Thompson sampling (``ts``, called ``name``) fares:
    typical and worst seed."""
    regret, ts_regret = report.values(outs, final_regret), report.values(ts, final_regret)
    wins = int(np.sum(regret < ts_regret))
    return (
        f"- {label}: median regret {np.median(regret):.0f} ({name} {np.median(ts_regret):.0f}), "
        f"lower than {name} on {wins} of {len(outs)} seeds; worst seed {regret.max():.0f} "
        f"({name} {ts_regret.max():.0f})."
    )


LOWCTR_TEXT = """Beta(1, 1) starts every arm at a mean of 1/2, so each arm is pulled until its
posterior falls to a few percent; the informative prior starts it at the pooled CTR. All arms
are in one forum here, so the "forum" counts are the pooled counts, taken (by default, as in
the service's `BANDIT_FORUM_WINDOW`) over each arm's first {window} impressions. Every arm
gets those whatever its CTR, so the prior stays at a typical arm's CTR. Counted over every
impression instead (the "forum totals" row), the pooled CTR is dominated by the arms the
policy already plays most (the best ones): it drifts from about 3 % towards the best arm's
CTR, and the prior of every rarely played arm drifts with it, which buys back exploration of
arms the data had already ruled out.

The last two rows explore less than Thompson sampling: `exploration=0.2` draws from a
posterior with a fifth of its variance, greedy takes the posterior mean. With a fixed set of
arms and no new ones arriving, an arm that starts unlucky may never be tried again, so their
typical regret is low and their worst seeds are far worse: the risk the service does not take.
Lai-Robbins at T, mean over seeds: {bound:.1f}.
"""


def _cut_at(hier: list[Outcome], flat: list[Outcome], step: int) -> float:
    """Relative regret cut of ``hier`` against ``flat`` at ``step`` (mean curves)."""
    return 1.0 - _curve_at(hier, step) / _curve_at(flat, step)


def _mean(outs: list[Outcome], metric: Callable[[Outcome], float] = final_regret) -> float:
    return float(report.values(outs, metric).mean())


def render_forum(
    key: str, plan: Plan, groups: dict[str, list[Outcome]], img: Path, doc: Path
) -> tuple[str, list[Target]]:
    """Section: the forum homepage (main world, or its dense-traffic variant)."""
    setting = plan.forum if key == "forum" else plan.dense
    two = groups["two_level_ts"]
    rows = []
    for label, outs in groups.items():
        p = paired(outs, two, ctr)
        rows.append(
            [
                label,
                report.mean_std(report.values(outs, ctr), 5),
                report.mean_std(report.values(outs, final_regret), 0),
                "" if outs is two else f"{p.diff:+.5f} ± {p.se:.5f}",
                "" if outs is two else f"{p.z:+.1f}",
            ]
        )
    table = report.markdown_table(
        ["policy", "CTR", "regret vs oracle", "CTR - two_level_ts (± SE)", "z"], rows
    )
    plot = img / f"{key}_regret.png"
    report.plot_regret(groups, plot, f"forum homepage ({key}): mean regret vs oracle slate")
    best_default = max((k for k in groups if k in DEFAULTS), key=lambda k: _mean(groups[k], ctr))
    best_any = max(groups, key=lambda k: _mean(groups[k], ctr))
    rivals = [k for k in groups if not k.startswith("two_level_ts")]
    best_rival = max(rivals, key=lambda k: _mean(groups[k], ctr))
    vs_flat = paired(two, groups["flat_ts"], ctr)
    lifts: dict[str, Paired] = {
        k: paired(two, groups[k], ctr) for k in ("random", "greedy") if k in groups
    }
    met = best_default == "two_level_ts" and vs_flat.z > 2
    title = "Forum homepage" if key == "forum" else "Forum homepage, dense traffic (sensitivity)"
    text = [
        f"## {title}",
        "",
        _world_text(setting.config, len(two), plan.forum_delay),
        "",
        table,
        "",
        f"![regret over visits]({_rel(plot, doc)})",
        "",
        _forum_sentences(groups, best_default, best_any, vs_flat, lifts),
        _ablation_sentences(groups, setting.config),
        "",
    ]
    name = "Forum" if key == "forum" else "Forum (dense variant)"
    measured = (
        f"best default policy: {best_default}; vs flat_ts {vs_flat.diff:+.5f} "
        f"(z = {vs_flat.z:.1f}); best of all rows: {best_any}"
    )
    target = Target(f"{name}: two_level_ts highest CTR, > flat_ts by 2 SE", measured, met)
    rival = paired(two, groups[best_rival], ctr)
    extra = Target(
        f"{name}: two_level_ts above every other policy row, parameter variants included",
        f"best other: {best_rival}, two_level_ts {rival.diff:+.5f} ± {rival.se:.5f}",
        rival.diff > 0,
    )
    return "\n".join(text), [target, extra]


def _forum_sentences(
    groups: dict[str, list[Outcome]],
    best_default: str,
    best_any: str,
    vs_flat: Paired,
    lifts: dict[str, Paired],
) -> str:
    two_ctr = _mean(groups["two_level_ts"], ctr)
    lines = [
        f"- `two_level_ts` CTR {two_ctr:.5f}; against `flat_ts`: {vs_flat.diff:+.5f} "
        f"± {vs_flat.se:.5f} (z = {vs_flat.z:.1f}, "
        f"{'more' if vs_flat.z > 2 else 'not more'} than two standard errors)."
    ]
    for name, p in lifts.items():
        lines.append(
            f"- Lift over `{name}`: {100 * (p.ratio - 1):+.1f} % "
            f"({p.diff:+.5f} ± {p.se:.5f} clicks per impression)."
        )
    if best_default == "two_level_ts":
        lines.append(
            "- Among the five policies at their defaults, `two_level_ts` has the highest CTR."
        )
    else:
        lines.append(
            f"- Among the five policies at their defaults, **`{best_default}` has the highest "
            f"CTR, not `two_level_ts`**."
        )
    if best_any != best_default:
        lines.append(
            f"- Across every row, including the ablations, the highest CTR is **`{best_any}`**."
        )
    if best_any in EXPLORE_LESS:
        lines.append(
            f"- `{best_any}` explores less than Thompson sampling. Here posts keep arriving and "
            "expire, and a rule that ranks a new post at its forum's CTR shows it anyway, so "
            "exploring less costs little; the low-CTR section shows the other side (a fixed "
            "set of arms, where its worst seeds are far worse)."
        )
    return "\n".join(lines)


EXPLORE_LESS = (
    "two_level_ts exploration=0.2",
    "greedy prior_strength=10",
    f"greedy prior_strength=10, {TOTALS}",
)


def _ablation_sentences(groups: dict[str, list[Outcome]], cfg: ForumConfig) -> str:
    """What the parts of the two-level rule contribute, read off the ablation rows."""
    two = groups["two_level_ts"]
    lines = []
    per_forum = _mean(two, lambda o: float(o.impressions)) / cfg.forums
    notes = {
        "two_level_ts order=sample": "ordering the slate by posterior mean (step 4)",
        "two_level_ts forum_draw=false": "the forum draw (step 1), replaced by the forum mean",
        HIER_LOW_TOTALS: (
            f"forum counts over each post's first {FORUM_WINDOW} impressions instead of all"
        ),
        "two_level_ts exploration=0.2": "the full posterior variance instead of a fifth of it",
    }
    for label, what in notes.items():
        if label not in groups:
            continue
        p = paired(two, groups[label], ctr)
        verdict = "no measurable difference" if abs(p.z) <= 2 else f"z = {p.z:+.1f}"
        lines.append(
            f"- {what}: two_level_ts minus this row {p.diff:+.5f} ± {p.se:.5f} ({verdict})."
        )
    draw = groups.get("two_level_ts forum_draw=false")
    if draw is not None and abs(paired(two, draw, ctr).z) <= 2:
        lines.append(
            f"- Forums collect about {per_forum:,.0f} impressions each over the run, so forum "
            "posteriors are narrow and a forum draw barely differs from the forum mean; the "
            "draw matters only while a forum is new or sparse."
        )
    return "\n".join(lines)


def _world_text(cfg: ForumConfig, seeds: int, delay: int) -> str:
    values = ", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg))
    return (
        f"World ({seeds} seeds): {values}. Posteriors refreshed every {delay} visits. "
        "Forum CTR levels are log-normal around `ctr_mean`; post CTRs within a forum are "
        "Beta(post_concentration * m_f, ...), so the default prior strength of 10 is about "
        "right when post_concentration = 10. Slot s is seen with probability 1/log2(s + 2); a "
        "seen post is an impression and is clicked with its CTR; a member never gets a post "
        f"they clicked again. Forum counts cover each post's first {FORUM_WINDOW} impressions "
        'except in the "forum totals" rows. Regret is against the oracle slate of the true CTRs.'
    )


def _rel(path: Path, doc: Path) -> str:
    try:
        return str(path.resolve().relative_to(doc.resolve().parent))
    except ValueError:
        return str(path)


def write_quality(doc: Path, img: Path, *, quick: bool = False, processes: int = 2) -> None:
    """Run every experiment and write ``doc`` (markdown) and its plots under ``img``."""
    plan = QUICK if quick else FULL
    began = time.perf_counter()
    header = header_lines(COMMAND + (" --quick" if quick else ""))  # the code that runs
    parts = sections(plan)
    total = sum(len(p.jobs()) for p in parts)
    print(f"bin/quality: {total} runs on {processes} processes", file=sys.stderr, flush=True)
    results = run_all(parts, processes)
    text = render(plan, results, (img, doc), header)
    minutes = (time.perf_counter() - began) / 60
    text = text.replace("\n## Targets", f"- wall time: {minutes:.1f} min\n\n## Targets", 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip() + "\n" + kept_section(doc))
    print(f"wrote {doc} in {minutes:.1f} min", file=sys.stderr, flush=True)


SERVICE_HEADING = "## The service over HTTP"


def kept_section(doc: Path) -> str:
    """The recorded run against the service (``forum --target``), kept from the old ``doc``:
    it needs a running service, so ``bin/quality`` does not make it again."""
    old = doc.read_text() if doc.exists() else ""
    start = old.find(SERVICE_HEADING)
    return "" if start < 0 else "\n" + old[start:]
