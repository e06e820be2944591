"""Exponentially decayed counters: statistics that forget with a half-life.

A decayed counter with half-life h holds, at time t, the sum over its events i (time t_i,
increment x_i) of ``x_i * 2 ** (-(t - t_i) / h)``: an event counts fully when it happens
and half as much h later. This is the discounting of discounted Thompson sampling (Raj &
Kalyani, "Taming non-stationary bandits: a Bayesian approach", 2017), applied by elapsed
time rather than by number of events, so that a post shown rarely forgets as fast as one
shown often.

The counter is stored as a pair (value, time of the last update) and decayed when read or
written, so no job has to sweep every counter. Decaying impressions and clicks by the same
factor keeps clicks <= impressions and leaves the CTR estimate of a post that nobody sees
unchanged while its weight (and with it the pull of the data against the prior) fades.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bandits.posterior import FloatArray


def check_half_life(value: float | None) -> float | None:
    """Return ``value`` as a float, or ``None`` (no forgetting).

    Raises:
        ValueError: if ``value`` is neither ``None`` nor a finite real number > 0.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"half_life must be None or a number > 0, got {value!r}")
    if not 0 < float(value) < math.inf:
        raise ValueError(f"half_life must be None or a finite number > 0, got {value!r}")
    return float(value)


def decay_factor(elapsed: npt.ArrayLike, half_life: float) -> FloatArray:
    """``2 ** (-elapsed / half_life)``: the weight left after ``elapsed`` time (no validation)."""
    return np.asarray(np.exp2(-np.asarray(elapsed, np.float64) / half_life), np.float64)


def decayed_update(
    value: npt.ArrayLike,
    last: npt.ArrayLike,
    now: npt.ArrayLike,
    half_life: float,
    increment: npt.ArrayLike = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Add ``increment`` at time ``now`` to the counter (``value``, ``last``).

    Returns the new pair (value, time): the value decayed to ``max(last, now)`` plus the
    increment decayed from ``now`` to that time. In order (``now >= last``) that is
    ``(value * 2 ** (-(now - last) / h) + increment, now)``; an event older than the last
    update is added with the weight it has at ``last``, so the counter equals
    ``sum_i x_i * 2 ** (-(t - t_i) / h)`` whatever order the events arrive in. With
    ``increment=0`` it only reads the counter at ``now``. Vectorised (arrays broadcast);
    inputs are not mutated.

    The update is *not* idempotent: applying the same event twice counts it twice. A caller
    that may see an event more than once (a retried task, a duplicated message) must drop
    the duplicate before updating, for example with a de-duplication marker per event.

    Raises:
        ValueError: if ``half_life`` is not a finite number > 0.
    """
    h = check_half_life(half_life)
    if h is None:
        raise ValueError("half_life must be a finite number > 0, got None")
    last_, now_ = np.asarray(last, np.float64), np.asarray(now, np.float64)
    at = np.maximum(last_, now_)
    new = np.asarray(value, np.float64) * decay_factor(at - last_, h)
    new = new + np.asarray(increment, np.float64) * decay_factor(at - now_, h)
    return np.asarray(new, np.float64), np.asarray(at, np.float64)
