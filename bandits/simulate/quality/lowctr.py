"""The low-CTR section of docs/quality.md: the hierarchical (informative) prior against
Beta(1, 1) on many arms, and what exploring less risks there."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bandits.simulate import report
from bandits.simulate.quality import stats
from bandits.simulate.quality.markdown import Rendered, Target, image_link, tail_line
from bandits.simulate.quality.plan import FLAT_LOW, HIER_LOW, HIER_LOW_TOTALS
from bandits.simulate.recommenders import FORUM_WINDOW
from bandits.simulate.report import final_regret, paired
from bandits.simulate.runner import LowCtrSetting, Outcome

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


def render_lowctr(
    setting: LowCtrSetting, groups: dict[str, list[Outcome]], img: Path, doc: Path
) -> Rendered:
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
        tail_line(label, groups[label], groups[HIER_LOW], HIER_LOW)
        for label in groups
        if label not in (HIER_LOW, HIER_LOW_TOTALS, FLAT_LOW)
    ]
    cut = paired(groups[HIER_LOW], flat, final_regret)
    target = Target(
        f"Low CTR K={setting.arms}: informative prior cuts regret >= 15 % vs Beta(1, 1)",
        f"{100 * (1 - cut.ratio):.1f} % (± {100 * cut.se / stats.mean(flat):.1f})",
        1 - cut.ratio >= 0.15,
    )
    text = [
        f"## Low CTR: K={setting.arms} arms, CTRs ~ Beta({a0:g}, {b0:g}) "
        f"(mean {100 * setting.mean:g} %), T={setting.horizon:,}",
        "",
        report.summary_table(groups, FLAT_LOW),
        "",
        f"![regret over time]({image_link(plot, doc)})",
        "",
        *lines,
        "",
        LOWCTR_TEXT.format(window=FORUM_WINDOW, bound=bound),
    ]
    return "\n".join(text), [target]


def _cut_line(label: str, hier: list[Outcome], flat: list[Outcome], setting: LowCtrSetting) -> str:
    diff = paired(hier, flat, final_regret)
    wins = sum(a.final_regret < b.final_regret for a, b in zip(hier, flat, strict=True))
    early = stats.cut_at(hier, flat, setting.horizon // 10)
    return (
        f"- {label}: regret cut by {100 * (1 - diff.ratio):.1f} % against Beta(1, 1) at T "
        f"(paired difference {diff.diff:+.1f} ± {diff.se:.1f}; lower on {wins} of {len(hier)} "
        f"seeds); at T/10 the cut is {100 * early:.1f} %."
    )
