"""Summaries of simulation outcomes: per-label statistics, paired differences, tables, plots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bandits.posterior import FloatArray
from bandits.simulate.runner import Outcome

Metric = Callable[[Outcome], float]


def final_regret(out: Outcome) -> float:
    """Cumulative expected regret at the end of the run."""
    return out.final_regret


def ctr(out: Outcome) -> float:
    """Realised clicks per impression."""
    return out.ctr


def expected_ctr(out: Outcome) -> float:
    """Expected clicks per impression, from the true CTRs of what was shown."""
    return out.expected_clicks / max(out.impressions, 1)


def group(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    """Outcomes by label (first-seen order), each list sorted by seed."""
    groups: dict[str, list[Outcome]] = {}
    for out in outcomes:
        groups.setdefault(out.label, []).append(out)
    return {label: sorted(outs, key=lambda o: o.seed) for label, outs in groups.items()}


def values(outs: Sequence[Outcome], metric: Metric) -> FloatArray:
    """The metric of each outcome, in order."""
    return np.array([metric(o) for o in outs], np.float64)


@dataclass(frozen=True)
class Paired:
    """Mean and standard error of the per-seed difference ``a - b``, and the ratio of means."""

    diff: float
    se: float
    ratio: float
    n: int

    @property
    def z(self) -> float:
        """Difference in standard errors (inf when the difference is exact)."""
        if self.se == 0:
            return 0.0 if self.diff == 0 else float(np.sign(self.diff) * np.inf)
        return self.diff / self.se


def paired(a: Sequence[Outcome], b: Sequence[Outcome], metric: Metric) -> Paired:
    """Paired comparison of two groups run on the same seeds.

    Raises:
        ValueError: if the two groups were not run on the same seeds.
    """
    if [o.seed for o in a] != [o.seed for o in b]:
        raise ValueError("paired comparison needs the same seeds in both groups")
    va, vb = values(a, metric), values(b, metric)
    d = va - vb
    se = float(d.std(ddof=1) / np.sqrt(d.shape[0])) if d.shape[0] > 1 else float("nan")
    ratio = float(va.mean() / vb.mean()) if vb.mean() != 0 else float("nan")
    return Paired(float(d.mean()), se, ratio, int(d.shape[0]))


def mean_std(xs: FloatArray, digits: int = 1) -> str:
    """``mean ± std`` (sample standard deviation over seeds)."""
    std = xs.std(ddof=1) if xs.shape[0] > 1 else 0.0
    return f"{xs.mean():.{digits}f} ± {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(groups: dict[str, list[Outcome]], reference: str | None = None) -> str:
    """Regret and CTR per label (mean ± std over seeds), paired against ``reference``."""
    headers = ["policy", "seeds", "regret at T", "CTR (realised)", "CTR (expected)"]
    if reference is not None:
        headers += [f"regret / {reference}", f"CTR - {reference} (± SE)"]
    rows = []
    for label, outs in groups.items():
        row = [
            label,
            str(len(outs)),
            mean_std(values(outs, final_regret)),
            mean_std(values(outs, ctr), 5),
            mean_std(values(outs, expected_ctr), 5),
        ]
        if reference is not None:
            reg, rate = (paired(outs, groups[reference], m) for m in (final_regret, ctr))
            row += [f"{reg.ratio:.3f}", f"{rate.diff:+.5f} ± {rate.se:.5f}"]
        rows.append(row)
    return markdown_table(headers, rows)


def plot_regret(
    groups: dict[str, list[Outcome]],
    path: Path,
    title: str,
    bound: Callable[[FloatArray], FloatArray] | None = None,
) -> None:
    """Write a PNG of mean cumulative regret over time (band: ± one std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for label, outs in groups.items():
        curves = np.stack([o.regret for o in outs])
        at, mean, std = outs[0].at, curves.mean(axis=0), curves.std(axis=0)
        ax.plot(at, mean, label=label, lw=1.6)
        ax.fill_between(at, mean - std, mean + std, alpha=0.15)
    if bound is not None:
        at = next(iter(groups.values()))[0].at
        ax.plot(at, bound(at.astype(np.float64)), "k--", lw=1.2, label="Lai-Robbins (asymptotic)")
    ax.set(title=title, xlabel="step", ylabel="cumulative expected regret")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
