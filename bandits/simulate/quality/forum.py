"""The forum homepage sections of docs/quality.md (the main world and its dense variant):
the five policies, the ablations of the two-level rule, the variants that explore less."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bandits.simulate import report
from bandits.simulate.environments import ForumConfig
from bandits.simulate.quality import stats
from bandits.simulate.quality.markdown import Rendered, Target, image_link
from bandits.simulate.quality.plan import DEFAULTS, HIER_LOW_TOTALS, TOTALS, Plan
from bandits.simulate.recommenders import FORUM_WINDOW
from bandits.simulate.report import Paired, ctr, final_regret, paired
from bandits.simulate.runner import Outcome

EXPLORE_LESS = (
    "two_level_ts exploration=0.2",
    "greedy prior_strength=10",
    f"greedy prior_strength=10, {TOTALS}",
)


def render_forum(
    key: str, plan: Plan, groups: dict[str, list[Outcome]], img: Path, doc: Path
) -> Rendered:
    """Section: the forum homepage (``key`` "forum": main world; "dense": its dense variant)."""
    setting = plan.forum if key == "forum" else plan.dense
    two = groups["two_level_ts"]
    plot = img / f"{key}_regret.png"
    report.plot_regret(groups, plot, f"forum homepage ({key}): mean regret vs oracle slate")
    best_default = max(
        (k for k in groups if k in DEFAULTS), key=lambda k: stats.mean(groups[k], ctr)
    )
    best_any = max(groups, key=lambda k: stats.mean(groups[k], ctr))
    vs_flat = paired(two, groups["flat_ts"], ctr)
    lifts: dict[str, Paired] = {
        k: paired(two, groups[k], ctr) for k in ("random", "greedy") if k in groups
    }
    title = "Forum homepage" if key == "forum" else "Forum homepage, dense traffic (sensitivity)"
    text = [
        f"## {title}",
        "",
        _world_text(setting.config, len(two), plan.forum_delay),
        "",
        _forum_table(groups),
        "",
        f"![regret over visits]({image_link(plot, doc)})",
        "",
        _forum_sentences(groups, best_default, best_any, vs_flat, lifts),
        _ablation_sentences(groups, setting.config),
        "",
    ]
    name = "Forum" if key == "forum" else "Forum (dense variant)"
    return "\n".join(text), _forum_targets(name, groups, best_default, best_any)


def _forum_table(groups: dict[str, list[Outcome]]) -> str:
    """CTR and regret per row, and each row's CTR paired against two_level_ts."""
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
    return report.markdown_table(
        ["policy", "CTR", "regret vs oracle", "CTR - two_level_ts (± SE)", "z"], rows
    )


def _forum_targets(
    name: str, groups: dict[str, list[Outcome]], best_default: str, best_any: str
) -> list[Target]:
    """two_level_ts against the defaults (and flat_ts by 2 SE), then against every row."""
    two = groups["two_level_ts"]
    vs_flat = paired(two, groups["flat_ts"], ctr)
    rivals = [k for k in groups if not k.startswith("two_level_ts")]
    best_rival = max(rivals, key=lambda k: stats.mean(groups[k], ctr))
    rival = paired(two, groups[best_rival], ctr)
    measured = (
        f"best default policy: {best_default}; vs flat_ts {vs_flat.diff:+.5f} "
        f"(z = {vs_flat.z:.1f}); best of all rows: {best_any}"
    )
    met = best_default == "two_level_ts" and vs_flat.z > 2
    return [
        Target(f"{name}: two_level_ts highest CTR, > flat_ts by 2 SE", measured, met),
        Target(
            f"{name}: two_level_ts above every other policy row, parameter variants included",
            f"best other: {best_rival}, two_level_ts {rival.diff:+.5f} ± {rival.se:.5f}",
            rival.diff > 0,
        ),
    ]


def _forum_sentences(
    groups: dict[str, list[Outcome]],
    best_default: str,
    best_any: str,
    vs_flat: Paired,
    lifts: dict[str, Paired],
) -> str:
    two_ctr = stats.mean(groups["two_level_ts"], ctr)
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


def _ablation_sentences(groups: dict[str, list[Outcome]], cfg: ForumConfig) -> str:
    """What the parts of the two-level rule contribute, read off the ablation rows."""
    two = groups["two_level_ts"]
    lines = []
    per_forum = stats.mean(two, lambda o: float(o.impressions)) / cfg.forums
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
