"""The statistics docs/quality.md quotes: means over seeds, ratios of means with their
standard errors, points of the mean regret curve.

Paired differences by seed (:class:`~bandits.simulate.report.Paired`) come from
:mod:`bandits.simulate.report`; this module adds what only the document needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bandits.simulate import report
from bandits.simulate.report import Metric, Paired, final_regret, paired
from bandits.simulate.runner import Outcome


@dataclass(frozen=True)
class Ratio:
    """A ratio of mean regrets paired by seed, with its delta-method standard error, and
    the paired difference it came from."""

    value: float
    se: float
    diff: Paired

    @classmethod
    def of(cls, a: list[Outcome], b: list[Outcome]) -> Ratio:
        """mean(a) / mean(b) over the same seeds.

        Raises:
            ValueError: if the two groups were not run on the same seeds.
        """
        p = paired(a, b, final_regret)  # checks the seeds
        va, vb = report.values(a, final_regret), report.values(b, final_regret)
        resid = va - p.ratio * vb
        return cls(p.ratio, float(resid.std(ddof=1) / np.sqrt(p.n) / vb.mean()), p)

    def text(self) -> str:
        """``ratio ± se`` and the 95 % interval."""
        lo, hi = self.value - 1.96 * self.se, self.value + 1.96 * self.se
        return f"{self.value:.3f} ± {self.se:.3f} (95 %: {lo:.3f}-{hi:.3f})"


def ratio_se(p: Paired, reference: list[Outcome]) -> float:
    """The paired difference's standard error relative to the mean regret of ``reference``
    (the ratio's standard error when the reference mean is taken as exact)."""
    return p.se / mean(reference)


def mean(outs: list[Outcome], metric: Metric = final_regret) -> float:
    """Mean of ``metric`` over the seeds of ``outs``."""
    return float(report.values(outs, metric).mean())


def curve_at(outs: list[Outcome], step: int) -> float:
    """Mean regret over seeds at ``step`` (interpolated between checkpoints)."""
    curve = np.mean(np.stack([o.regret for o in outs]), axis=0)
    return float(np.interp(step, outs[0].at, curve))


def cut_at(hier: list[Outcome], flat: list[Outcome], step: int) -> float:
    """Relative regret cut of ``hier`` against ``flat`` at ``step`` (mean curves)."""
    return 1.0 - curve_at(hier, step) / curve_at(flat, step)


def log_slope(outs: list[Outcome]) -> float:
    """Mean increase of regret per unit of ln t between T/10 and T."""
    at = outs[0].at
    curve = np.mean(np.stack([o.regret for o in outs]), axis=0)
    start = int(np.searchsorted(at, at[-1] / 10))
    return float((curve[-1] - curve[start]) / np.log(at[-1] / at[start]))
