"""Beta-Bernoulli posteriors for click-through rates, flat and hierarchical.

Every arm (a post) is a Bernoulli variable: an impression is clicked or not. With a
Beta(a0, b0) prior and ``clicks`` out of ``impressions`` the posterior is

    Beta(a0 + clicks, b0 + impressions - clicks).

The hierarchical (empirical Bayes) prior used by the service has three levels:

* global: Beta(1 + C, 1 + I - C) from all clicks C and impressions I, so that with no
  data at all the global mean falls back to 1/2 with the weight of two pseudo-impressions;
* forum: a prior centred on the global posterior mean ``m_g`` with ``forum_prior_strength``
  pseudo-impressions, updated by the forum's own counts;
* post: a prior centred on its forum's posterior mean ``m_f`` with ``prior_strength``
  pseudo-impressions, updated by the post's own counts.

A prior "centred on m with strength s" is Beta(s * m, s * (1 - m)). Every mean stays in the
open interval (0, 1) and every alpha and beta is strictly positive, whatever the counts
(prior means are floored at 1e-12 on either side).

All functions are vectorised over numpy arrays and never mutate their inputs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

#: Prior means are kept in [MEAN_FLOOR, 1 - MEAN_FLOOR] so that alpha and beta stay > 0.
MEAN_FLOOR = 1e-12

#: Flat prior Beta(1, 1) used at the global level and by the "flat" baselines.
FLAT_PRIOR = (1.0, 1.0)


def as_counts(name: str, values: ArrayLike) -> FloatArray:
    """Return ``values`` as a float64 array of finite, non-negative counts.

    Raises:
        ValueError: if the values are not real numbers, not finite or negative; the message
            names ``name``.
    """
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    # min/max are the cheap happy path; NaN fails both comparisons.
    if array.size and not (array.min() >= 0 and array.max() < np.inf):
        _raise_bad_counts(name, array)
    return array


def _raise_bad_counts(name: str, array: FloatArray) -> None:
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    raise ValueError(f"{name} must be >= 0, found {array.min()!r}")


def check_clicks(
    impressions: FloatArray, clicks: FloatArray, impressions_name: str, clicks_name: str
) -> None:
    """Check that ``clicks <= impressions`` element-wise (shapes must broadcast).

    Raises:
        ValueError: naming both arguments and the first offending value.
    """
    try:
        excess = clicks > impressions
    except ValueError as error:
        raise ValueError(
            f"{clicks_name} shape {np.shape(clicks)} does not match "
            f"{impressions_name} shape {np.shape(impressions)}"
        ) from error
    if excess.any():
        imps, clks = np.broadcast_arrays(np.atleast_1d(impressions), np.atleast_1d(clicks))
        where = tuple(np.argwhere(clks > imps)[0].tolist())
        raise ValueError(
            f"{clicks_name} must be <= {impressions_name}: at index {where} "
            f"{clks[where]!r} > {imps[where]!r}"
        )


def counts(
    impressions: ArrayLike, clicks: ArrayLike, prefix: str = ""
) -> tuple[FloatArray, FloatArray]:
    """Validate a pair of count arrays and return them as float64.

    Raises:
        ValueError: for negative or non-finite counts, or clicks above impressions.
    """
    imps = as_counts(f"{prefix}impressions", impressions)
    clks = as_counts(f"{prefix}clicks", clicks)
    check_clicks(imps, clks, f"{prefix}impressions", f"{prefix}clicks")
    return imps, clks


def check_strength(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a usable prior strength.

    The limits keep alpha and beta representable and strictly positive.

    Raises:
        ValueError: if ``value`` is not a real number in [1e-3, 1e9].
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number in [0.001, 1e9], got {value!r}")
    if not 1e-3 <= float(value) <= 1e9:
        raise ValueError(f"{name} must be in [0.001, 1e9], got {value!r}")
    return float(value)


def beta_bernoulli(
    impressions: ArrayLike,
    clicks: ArrayLike,
    prior_alpha: ArrayLike = 1.0,
    prior_beta: ArrayLike = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Posterior Beta(alpha, beta) of a CTR after ``clicks`` out of ``impressions``.

    Raises:
        ValueError: for negative or non-finite counts, clicks above impressions, or a
            non-positive prior parameter.
    """
    imps, clks = counts(impressions, clicks)
    a0, b0 = np.asarray(prior_alpha, np.float64), np.asarray(prior_beta, np.float64)
    if not (np.all(a0 > 0) and np.all(b0 > 0)):
        raise ValueError("prior_alpha and prior_beta must be > 0")
    return a0 + clks, b0 + (imps - clks)


def mean_of(alpha: ArrayLike, beta: ArrayLike) -> FloatArray:
    """Mean alpha / (alpha + beta) of Beta distributions (no validation)."""
    a, b = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
    return np.asarray(a / (a + b), np.float64)


def global_posterior(impressions: ArrayLike, clicks: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Posterior of the site-wide CTR under the flat Beta(1, 1) prior.

    Raises:
        ValueError: as :func:`beta_bernoulli`.
    """
    return beta_bernoulli(impressions, clicks, *FLAT_PRIOR)


def forum_posterior(
    forum_impressions: ArrayLike,
    forum_clicks: ArrayLike,
    global_impressions: ArrayLike,
    global_clicks: ArrayLike,
    forum_prior_strength: float = 10.0,
) -> tuple[FloatArray, FloatArray]:
    """Posterior of each forum's CTR with a prior centred on the global posterior mean.

    Raises:
        ValueError: for invalid counts or a strength outside [1e-3, 1e9].
    """
    strength = check_strength("forum_prior_strength", forum_prior_strength)
    g_imps, g_clks = counts(global_impressions, global_clicks, "global_")
    imps, clks = counts(forum_impressions, forum_clicks, "forum_")
    g_alpha, g_beta = 1.0 + g_clks, 1.0 + (g_imps - g_clks)
    return shrunk_params(clks, imps - clks, g_alpha, g_beta, strength)


def post_posterior(  # noqa: PLR0917 (the service calls it positionally, as agreed)
    impressions: ArrayLike,
    clicks: ArrayLike,
    forum_impressions: ArrayLike,
    forum_clicks: ArrayLike,
    global_impressions: ArrayLike,
    global_clicks: ArrayLike,
    prior_strength: float = 10.0,
    *,
    forum_prior_strength: float = 10.0,
) -> tuple[FloatArray, FloatArray]:
    """Posterior Beta(alpha, beta) of each post under the hierarchical prior.

    ``forum_*`` are the statistics of each post's forum (aligned with ``impressions`` or
    broadcastable to it), ``global_*`` the site-wide totals. A post with no impressions
    gets the prior centred on its forum's posterior mean with ``prior_strength``
    pseudo-impressions.

    Raises:
        ValueError: for invalid counts (naming the argument) or strengths outside [1e-3, 1e9].
    """
    strength = check_strength("prior_strength", prior_strength)
    f_alpha, f_beta = forum_posterior(
        forum_impressions, forum_clicks, global_impressions, global_clicks, forum_prior_strength
    )
    imps, clks = counts(impressions, clicks)
    return shrunk_params(clks, imps - clks, f_alpha, f_beta, strength)


def shrunk_params(
    clicks: ArrayLike,
    failures: ArrayLike,
    parent_alpha: ArrayLike,
    parent_beta: ArrayLike,
    strength: float,
) -> tuple[FloatArray, FloatArray]:
    """Posterior (alpha, beta) under a prior centred on the parent Beta's mean (no validation).

    The prior is Beta(s * m, s * (1 - m)) with m = a / (a + b) for the parent Beta(a, b),
    m and 1 - m each floored at 1e-12 so both parameters stay > 0 for any finite counts.
    """
    a, b = np.asarray(parent_alpha, np.float64), np.asarray(parent_beta, np.float64)
    total = a + b
    a0 = strength * np.maximum(a / total, MEAN_FLOOR)
    b0 = strength * np.maximum(b / total, MEAN_FLOOR)
    return a0 + np.asarray(clicks, np.float64), b0 + np.asarray(failures, np.float64)


def beta_summary(
    alpha: ArrayLike, beta: ArrayLike, level: float = 0.95
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Mean and equal-tailed ``level`` credible interval (mean, lo, hi) of Beta(alpha, beta).

    Raises:
        ValueError: if ``level`` is not in (0, 1) or any alpha, beta is not finite and > 0.
    """
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    a, b = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
        raise ValueError("alpha and beta must be finite and > 0")
    tail = (1.0 - level) / 2.0
    lo = special.betaincinv(a, b, tail)
    hi = special.betaincinv(a, b, 1.0 - tail)
    return mean_of(a, b), np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def kl_bernoulli(p: ArrayLike, q: ArrayLike) -> FloatArray:
    """Kullback-Leibler divergence KL(Bernoulli(p) || Bernoulli(q)), p in [0, 1], q in (0, 1)."""
    p_, q_ = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return np.asarray(special.rel_entr(p_, q_) + special.rel_entr(1 - p_, 1 - q_), np.float64)


def lai_robbins_bound(means: ArrayLike, horizon: int) -> float:
    """Lai-Robbins asymptotic lower bound on expected regret at ``horizon`` pulls.

    sum over suboptimal arms i of (mu* - mu_i) / KL(mu_i, mu*) * ln(horizon). It is an
    asymptotic statement (the ratio regret / ln T tends to at least the constant), so a
    finite-horizon regret may lie below it.

    Raises:
        ValueError: if the means are not in [0, 1), or the horizon is < 1.
    """
    mu = np.asarray(means, np.float64)
    if mu.size == 0 or np.any(mu < 0) or np.any(mu >= 1):
        raise ValueError("means must be a non-empty array of values in [0, 1)")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon!r}")
    best = mu.max()
    sub = mu[mu < best]
    if sub.size == 0 or best == 0:
        return 0.0
    return float(np.sum((best - sub) / kl_bernoulli(sub, best)) * np.log(horizon))
