"""Results of an experiment per variant, with statistics that survive daily peeking.

Input: per variant and member bucket (see :func:`~core.experiments.assignment.member_bucket`)
the totals of members, slates, impressions and clicks (:class:`ExperimentCounts`). A bucket
is a sum over whole members, and members fall into buckets at random, independently of the
variant, so the B buckets of a variant are B independent, identically distributed units
however correlated the slates of one member are. Everything below treats them so.

* Metrics: CTR = clicks / impressions and clicks per slate = clicks / slates, ratios of
  totals. Their variance is the delta method's over the buckets (Deng, Knoblich, Lu,
  "Applying the Delta Method in Metric Analytics", KDD 2018, section 3):
  ``Var(sum Y / sum X) ~ B / (B - 1) * sum_b (Y_b - R X_b)^2 / (sum X)^2``.
* Each variant against the control: the difference of each metric with its 95 % interval
  ``d +- 1.96 se`` (valid when read once, at a horizon fixed in advance), and, valid however
  often it is read, the mixture sequential probability ratio test (mSPRT) with a normal
  mixture N(0, tau^2) over the difference: always-valid p-value ``min(1, 1 / Lambda)`` with
  ``Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))`` and the confidence
  sequence ``d +- sqrt(V (V + tau^2) / tau^2 (2 log(1 / alpha) + log((V + tau^2) / V)))``
  (Johari, Koomen, Pekelis, Walsh, "Always Valid Inference: Continuous Monitoring of A/B
  Tests", Operations Research 2022, eqs. 11-13; the boundary is the normal mixture of
  Howard, Ramdas, McAuliffe, Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Annals of Statistics 2021). Rejecting when the p-value of *any* read falls
  below alpha has false-positive rate at most alpha; so the p-value of a sequence of reads
  is the minimum so far and the confidence sequence their intersection (the caller, who
  keeps the reads, may take them).
* tau (the mixing standard deviation) is ``mde`` (default 10 %) times the metric pooled
  over the variant and the control: the mSPRT detects soonest effects near tau (Johari et
  al., section 4), and a policy change worth shipping here moves CTR by some 10 % or more
  (larger effects are found sooner still). Pooling both arms keeps tau blind to which arm
  is ahead.
* Sample-ratio mismatch: the chi-square test of the members per variant against the
  weights, flagged at p < 0.001 (Fabijan et al., "Diagnosing Sample Ratio Mismatch in
  Online Controlled Experiments", KDD 2019).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

METRICS: dict[str, tuple[str, str]] = {
    "ctr": ("clicks", "impressions"),
    "clicks_per_slate": ("clicks", "slates"),
}
COUNTS = ("members", "slates", "impressions", "clicks")
DEFAULT_MDE = 0.1
SRM_P_VALUE = 0.001
_Z95 = float(stats.norm.ppf(0.975))


def ratio_with_variance(
    numerators: npt.ArrayLike, denominators: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Ratio of totals over the last axis (the buckets) and its delta-method variance.

    Works on any leading batch shape; NaN where the denominators sum to 0 (Deng et al. 2018).
    """
    num, den = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)
    n_units = num.shape[-1]
    total_num, total_den = num.sum(-1), den.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = total_num / total_den
        resid = num - ratio[..., None] * den
        variance = n_units / (n_units - 1) * np.square(resid).sum(-1) / np.square(total_den)
    return ratio, variance


def mixing_variance(pooled: npt.ArrayLike, mde: float = DEFAULT_MDE) -> FloatArray:
    """tau^2 = (mde * pooled metric)^2, the mSPRT's mixing variance (module docstring)."""
    return np.square(mde * np.asarray(pooled, np.float64))


def _usable(variance: FloatArray, tau2: FloatArray) -> Any:
    return np.isfinite(variance) & (variance > 0) & np.isfinite(tau2) & (tau2 > 0)


def msprt_p_value(
    estimate: npt.ArrayLike, variance: npt.ArrayLike, tau2: npt.ArrayLike
) -> FloatArray:
    """Always-valid p-value of "difference = 0" at one read: min(1, 1 / Lambda).

    1 where the variance or tau^2 is not positive and finite (no evidence yet).
    (Johari et al. 2022, normal mixture; see the module docstring.)
    """
    d, v, t = (np.asarray(a, np.float64) for a in (estimate, variance, tau2))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_lr = 0.5 * np.log(v / (v + t)) + t * np.square(d) / (2 * v * (v + t))
        p = np.minimum(1.0, np.exp(-log_lr))
    return np.where(_usable(v, t) & np.isfinite(d), p, 1.0)


def confidence_sequence(
    estimate: npt.ArrayLike, variance: npt.ArrayLike, tau2: npt.ArrayLike, alpha: float = 0.05
) -> tuple[FloatArray, FloatArray]:
    """The (1 - alpha) normal-mixture confidence sequence of the difference at one read.

    NaN where the variance or tau^2 is not positive and finite (Johari et al. 2022, eq. 13).
    """
    d, v, t = (np.asarray(a, np.float64) for a in (estimate, variance, tau2))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = np.sqrt(v * (v + t) / t * (2 * np.log(1 / alpha) + np.log((v + t) / v)))
    half = np.where(_usable(v, t), half, np.nan)
    return d - half, d + half


def srm_p_value(members: npt.ArrayLike, weights: npt.ArrayLike) -> FloatArray:
    """Chi-square p-value of the members per variant (last axis) against the weights.

    A variant of weight 0 with members gives 0; no members at all gives 1.
    """
    observed = np.asarray(members, np.float64)
    share = np.asarray(weights, np.float64) / np.sum(weights)
    total = observed.sum(-1, keepdims=True)
    expected = total * share
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = np.where(expected > 0, np.square(observed - expected) / expected, 0.0)
    cells = np.where((expected == 0) & (observed > 0), np.inf, cells)
    dof = max(int(np.count_nonzero(share)) - 1, 1)
    p = stats.chi2.sf(cells.sum(-1), dof)
    return np.where(total[..., 0] > 0, p, 1.0)


def _frozen_counts(name: str, values: npt.ArrayLike, shape: tuple[int, ...] | None) -> Any:
    array = np.array(values, dtype=np.float64)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        raise ValueError(f"{name} must have shape (variants, buckets), got {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class ExperimentCounts:
    """Totals of one experiment per (variant, member bucket), as the storage counts them.

    Attributes:
        variants: variant names, in declared order; ``weights`` their allocation weights.
        control: the variant the others are compared with.
        members: distinct members with at least one slate, shape (V, B); ``slates``,
            ``impressions``, ``clicks``: their totals, same shape. Read-only float copies.

    Raises:
        ValueError: for fewer than 2 buckets, mismatched shapes or lengths, negative or
            non-finite counts or weights, repeated names, or a control not among the variants.
    """

    variants: tuple[str, ...]
    weights: tuple[float, ...]
    control: str
    members: FloatArray
    slates: FloatArray
    impressions: FloatArray
    clicks: FloatArray

    def __post_init__(self) -> None:
        shape = None
        for name in COUNTS:
            array = _frozen_counts(name, getattr(self, name), shape)
            object.__setattr__(self, name, array)
            shape = array.shape
        assert shape is not None
        if shape[0] != len(self.variants) or len(self.weights) != len(self.variants):
            raise ValueError(f"need one name and one weight per variant (row), got {shape[0]}")
        if shape[1] < 2:
            raise ValueError(f"need at least 2 member buckets, got {shape[1]}")
        if len(set(self.variants)) != len(self.variants) or self.control not in self.variants:
            raise ValueError(f"control {self.control!r} must be one of distinct {self.variants}")
        weights = np.asarray(self.weights, np.float64)
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0, not all 0, got {self.weights}")


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class VariantSummary:
    """Totals and metrics of one variant (a metric is None without its denominator)."""

    name: str
    weight: float
    members: int
    slates: int
    impressions: int
    clicks: int
    ctr: float | None
    clicks_per_slate: float | None


@dataclass(frozen=True)
class Difference:
    """One metric of one variant minus the control's.

    ``interval`` is the 95 % interval for a single read at a planned horizon;
    ``sequence`` and ``p_value`` stay valid at every read (mSPRT with mixing sd ``tau``).
    """

    variant: str
    metric: str
    estimate: float | None
    std_error: float | None
    interval: tuple[float | None, float | None]
    sequence: tuple[float | None, float | None]
    p_value: float
    tau: float | None


@dataclass(frozen=True)
class SampleRatio:
    """The sample-ratio check: members per variant against the weights."""

    members: tuple[int, ...]
    expected_shares: tuple[float, ...]
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class ExperimentResult:
    """Everything the API returns and the CLI prints about one experiment."""

    control: str
    variants: tuple[VariantSummary, ...]
    differences: tuple[Difference, ...]
    sample_ratio: SampleRatio
    mde: float
    alpha: float = 0.05
    method: str = field(default="delta method over member buckets; normal-mixture mSPRT")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples as lists, undefined numbers as None)."""
        return asdict(self)

    def to_json(self) -> str:
        """The result as JSON text."""
        return json.dumps(self.to_dict(), allow_nan=False)


def _metric(totals: dict[str, int], metric: str) -> float | None:
    num, den = METRICS[metric]
    return totals[num] / totals[den] if totals[den] else None


def _summary(counts: ExperimentCounts, row: int) -> VariantSummary:
    totals = {name: int(getattr(counts, name)[row].sum()) for name in COUNTS}
    return VariantSummary(
        name=counts.variants[row], weight=float(counts.weights[row]),
        members=totals["members"], slates=totals["slates"],
        impressions=totals["impressions"], clicks=totals["clicks"],
        ctr=_metric(totals, "ctr"), clicks_per_slate=_metric(totals, "clicks_per_slate"),
    )  # fmt: skip


def _difference(
    counts: ExperimentCounts, row: int, metric: str, mde: float, alpha: float
) -> Difference:
    base = counts.variants.index(counts.control)
    num, den = (getattr(counts, name)[[row, base]] for name in METRICS[metric])
    ratio, variance = ratio_with_variance(num, den)
    estimate, var = ratio[0] - ratio[1], variance.sum()
    tau2 = mixing_variance(ratio_with_variance(num.sum(0), den.sum(0))[0], mde)
    se = math.sqrt(var) if var > 0 and math.isfinite(var) else math.nan
    low, high = confidence_sequence(estimate, var, tau2, alpha)
    return Difference(
        variant=counts.variants[row], metric=metric, estimate=_num(estimate),
        std_error=_num(se),
        interval=(_num(estimate - _Z95 * se), _num(estimate + _Z95 * se)),
        sequence=(_num(low), _num(high)),
        p_value=float(msprt_p_value(estimate, var, tau2)), tau=_num(np.sqrt(tau2)),
    )  # fmt: skip


def _sample_ratio(counts: ExperimentCounts) -> SampleRatio:
    members = counts.members.sum(1)
    p = float(srm_p_value(members, counts.weights))
    shares = np.asarray(counts.weights) / np.sum(counts.weights)
    return SampleRatio(
        members=tuple(int(m) for m in members),
        expected_shares=tuple(float(s) for s in shares),
        p_value=p,
        mismatch=p < SRM_P_VALUE,
    )


def analyse(
    counts: ExperimentCounts, *, mde: float = DEFAULT_MDE, alpha: float = 0.05
) -> ExperimentResult:
    """Per-variant totals and metrics, each variant against the control, and the SRM check.

    Raises:
        ValueError: if ``mde`` is not in (0, 10] or ``alpha`` not in (0, 0.5].
    """
    if not 0 < mde <= 10:
        raise ValueError(f"mde must be in (0, 10], got {mde!r}")
    if not 0 < alpha <= 0.5:
        raise ValueError(f"alpha must be in (0, 0.5], got {alpha!r}")
    rows = range(len(counts.variants))
    base = counts.variants.index(counts.control)
    differences = tuple(
        _difference(counts, row, metric, mde, alpha)
        for row in rows
        if row != base
        for metric in METRICS
    )
    return ExperimentResult(
        control=counts.control,
        variants=tuple(_summary(counts, row) for row in rows),
        differences=differences,
        sample_ratio=_sample_ratio(counts),
        mde=mde,
        alpha=alpha,
    )


def _fmt(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _pair(pair: tuple[float | None, float | None]) -> str:
    return f"[{_fmt(pair[0], sign=True)}, {_fmt(pair[1], sign=True)}]"


def render_table(result: ExperimentResult) -> str:
    """The result as fixed-width text tables, for the command line."""
    head = f"{'variant':<16}{'weight':>8}{'members':>10}{'slates':>10}{'impr.':>11}"
    lines = [head + f"{'clicks':>9}{'CTR':>9}{'clicks/slate':>14}"]
    for v in result.variants:
        name = v.name + (" *" if v.name == result.control else "")
        lines.append(
            f"{name:<16}{v.weight:>8g}{v.members:>10}{v.slates:>10}{v.impressions:>11}"
            f"{v.clicks:>9}{_fmt(v.ctr):>9}{_fmt(v.clicks_per_slate):>14}"
        )
    level = f"{1 - result.alpha:.0%}"
    header = f"{'vs control':<16}{'metric':<18}{'difference':>11}  {'95% interval':<22}"
    lines += ["* control", "", header + f"{level + ' sequence':<22}{'always-valid p':>14}"]
    for d in result.differences:
        lines.append(
            f"{d.variant:<16}{d.metric:<18}{_fmt(d.estimate, sign=True):>11}  "
            f"{_pair(d.interval):<22}{_pair(d.sequence):<22}{d.p_value:>14.4f}"
        )
    srm = result.sample_ratio
    verdict = "MISMATCH: do not trust the results" if srm.mismatch else "ok"
    lines += [
        "* control",
        f"sample ratio: members {list(srm.members)}, p = {srm.p_value:.3g} ({verdict})",
    ]
    return "\n".join(lines)
