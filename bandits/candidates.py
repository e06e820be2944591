"""The candidate posts of one statistics snapshot, validated once.

The service builds one :class:`Candidates` per statistics refresh and calls
``policy.select`` on it for every request, so everything that does not depend on the
request or the random draw is computed here, once, and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from bandits.forgetting import decay_factor
from bandits.posterior import FloatArray, as_counts, check_clicks, shrunk_params

IntArray = npt.NDArray[np.intp]
_ArrayT = TypeVar("_ArrayT", bound=np.ndarray)


def _index_array(name: str, values: npt.ArrayLike) -> IntArray:
    """Return ``values`` as a read-only 1-D intp copy.

    Raises:
        ValueError: if the values are not a 1-D array of integers.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iu" and array.size:
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return _frozen(array.astype(np.intp))


def _count_array(name: str, values: npt.ArrayLike, length: int) -> FloatArray:
    """Return a read-only float64 copy of a count array of shape (length,).

    Raises:
        ValueError: for a wrong shape, non-real, non-finite or negative values.
    """
    array = as_counts(name, values)
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {array.shape}")
    return _frozen(array.copy())


def _times_array(
    values: npt.ArrayLike | None, length: int, name: str = "post_created_at"
) -> FloatArray | None:
    """Return times as a read-only float64 copy of shape (length,), or ``None``.

    Raises:
        ValueError: for a wrong shape or non-real or non-finite values.
    """
    if values is None:
        return None
    array = np.asarray(values)
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {array.shape}")
    if array.dtype.kind not in "iuf" and array.size:
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return _frozen(array)


def _as_of(value: npt.ArrayLike | None, counted: bool) -> float | None:
    """Validate the snapshot time that decayed counts are read at.

    Raises:
        ValueError: if it is not a finite real number, or is missing while count times
            are given.
    """
    if value is None:
        if counted:
            raise ValueError("as_of is needed with post_counted_at and forum_counted_at")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"as_of must be a real number, got {value!r}")
    if not np.isfinite(float(value)):
        raise ValueError(f"as_of must be finite, got {value!r}")
    return float(value)


def _frozen(array: _ArrayT) -> _ArrayT:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False, init=False)
class Candidates:
    """Statistics of P candidate posts spread over F forums.

    Attributes:
        post_forum: forum index (0..F-1) of each post, shape (P,).
        post_impressions, post_clicks: counts of each post, shape (P,).
        forum_impressions, forum_clicks: counts of each forum, shape (F,). They may include
            posts that are no longer candidates; the global totals are their sums.
        post_created_at: optional creation time of each post (unix seconds), shape (P,);
            ``None`` (the default) when the caller has none. The ``recent`` policy needs it.
        post_counted_at, forum_counted_at, as_of: optional, for decayed counters
            (:mod:`bandits.forgetting`): the time each post's and each forum's counts were
            last updated, shapes (P,) and (F,), and the time of the snapshot. A policy with
            a ``half_life`` reads the counts decayed from their time to ``as_of``
            (:meth:`decayed`); the others read them as given.

    All arguments are keyword-only (five same-shaped arrays are too easy to swap). They are
    copied and made read-only; integer or float counts are accepted (array-likes too).

    Raises:
        ValueError: for a wrong shape, a non-integer or out-of-range forum index, negative or
            non-finite counts, clicks above impressions, non-finite times, or count times
            without both arrays and ``as_of``; the message names the argument.
    """

    post_forum: IntArray
    post_impressions: FloatArray
    post_clicks: FloatArray
    forum_impressions: FloatArray
    forum_clicks: FloatArray
    post_created_at: FloatArray | None = None
    post_counted_at: FloatArray | None = None
    forum_counted_at: FloatArray | None = None
    as_of: float | None = None

    def __init__(
        self,
        *,
        post_forum: npt.ArrayLike,
        post_impressions: npt.ArrayLike,
        post_clicks: npt.ArrayLike,
        forum_impressions: npt.ArrayLike,
        forum_clicks: npt.ArrayLike,
        post_created_at: npt.ArrayLike | None = None,
        post_counted_at: npt.ArrayLike | None = None,
        forum_counted_at: npt.ArrayLike | None = None,
        as_of: npt.ArrayLike | None = None,
    ) -> None:
        forum = _index_array("post_forum", post_forum)
        n_posts = forum.shape[0]
        f_imps = np.asarray(forum_impressions)
        n_forums = f_imps.shape[0] if f_imps.ndim == 1 else -1
        if n_forums < 0:
            raise ValueError(f"forum_impressions must be 1-D, got shape {f_imps.shape}")
        fields: dict[str, Any] = {
            "post_forum": forum,
            "post_impressions": _count_array("post_impressions", post_impressions, n_posts),
            "post_clicks": _count_array("post_clicks", post_clicks, n_posts),
            "forum_impressions": _count_array("forum_impressions", f_imps, n_forums),
            "forum_clicks": _count_array("forum_clicks", forum_clicks, n_forums),
            "post_created_at": _times_array(post_created_at, n_posts),
            "post_counted_at": _times_array(post_counted_at, n_posts, "post_counted_at"),
            "forum_counted_at": _times_array(forum_counted_at, n_forums, "forum_counted_at"),
        }
        if (fields["post_counted_at"] is None) != (fields["forum_counted_at"] is None):
            raise ValueError("post_counted_at and forum_counted_at go together")
        fields["as_of"] = _as_of(as_of, fields["post_counted_at"] is not None)
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        self._check_relations()

    @classmethod
    def unchecked(
        cls,
        *,
        post_forum: IntArray,
        post_impressions: FloatArray,
        post_clicks: FloatArray,
        forum_impressions: FloatArray,
        forum_clicks: FloatArray,
        post_created_at: FloatArray | None = None,
        post_counted_at: FloatArray | None = None,
        forum_counted_at: FloatArray | None = None,
        as_of: float | None = None,
    ) -> Candidates:
        """Candidates from arrays the caller built and owns: no validation, no copies.

        For the simulator, which rebuilds candidates after every decision from its own,
        valid counters. The arrays must be intp / float64 and satisfy everything the
        constructor checks, and must not be mutated afterwards.
        """
        self = object.__new__(cls)
        fields = {
            "post_forum": post_forum,
            "post_impressions": post_impressions,
            "post_clicks": post_clicks,
            "forum_impressions": forum_impressions,
            "forum_clicks": forum_clicks,
            "post_created_at": post_created_at,
            "post_counted_at": post_counted_at,
            "forum_counted_at": forum_counted_at,
            "as_of": as_of,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        return self

    def _check_relations(self) -> None:
        check_clicks(self.post_impressions, self.post_clicks, "post_impressions", "post_clicks")
        check_clicks(self.forum_impressions, self.forum_clicks, "forum_impressions", "forum_clicks")
        if self.n_posts and (self.post_forum.min() < 0 or self.post_forum.max() >= self.n_forums):
            bad = self.post_forum[(self.post_forum < 0) | (self.post_forum >= self.n_forums)][0]
            raise ValueError(
                f"post_forum values must be in [0, {self.n_forums - 1}] "
                f"(F = len(forum_impressions) = {self.n_forums}), found {bad}"
            )

    @property
    def n_posts(self) -> int:
        """Number of candidate posts P."""
        return int(self.post_forum.shape[0])

    @property
    def n_forums(self) -> int:
        """Number of forums F."""
        return int(self.forum_impressions.shape[0])

    @cached_property
    def global_impressions(self) -> float:
        """Site-wide impressions: the sum of the forum impressions."""
        return float(self.forum_impressions.sum())

    @cached_property
    def global_clicks(self) -> float:
        """Site-wide clicks: the sum of the forum clicks."""
        return float(self.forum_clicks.sum())

    @cached_property
    def post_failures(self) -> FloatArray:
        """Impressions without a click, per post."""
        return _frozen(self.post_impressions - self.post_clicks)

    @cached_property
    def forum_failures(self) -> FloatArray:
        """Impressions without a click, per forum."""
        return _frozen(self.forum_impressions - self.forum_clicks)

    @cached_property
    def forum_post_counts(self) -> IntArray:
        """Number of candidate posts in each forum, shape (F,)."""
        return _frozen(np.bincount(self.post_forum, minlength=self.n_forums).astype(np.intp))

    @cached_property
    def posts_by_forum(self) -> IntArray:
        """Post indices grouped by forum (ascending forum, then ascending post index)."""
        return _frozen(np.argsort(self.post_forum, kind="stable").astype(np.intp))

    @cached_property
    def forum_starts(self) -> IntArray:
        """Offsets of each forum's group in :attr:`posts_by_forum`, shape (F + 1,)."""
        starts = np.zeros(self.n_forums + 1, np.intp)
        np.cumsum(self.forum_post_counts, out=starts[1:])
        return _frozen(starts)

    @cached_property
    def _forum_posteriors(self) -> dict[float, tuple[FloatArray, FloatArray]]:
        return {}

    def forum_posterior(self, strength: float) -> tuple[FloatArray, FloatArray]:
        """Forum posteriors (alpha, beta), prior centred on the global mean (cached).

        ``strength`` is the forum prior's pseudo-impressions, assumed valid (policies check
        it); the global prior is Beta(1, 1). Computed once per snapshot and strength.
        """
        cached = self._forum_posteriors.get(strength)
        if cached is None:
            g_alpha = 1.0 + self.global_clicks
            g_beta = 1.0 + (self.global_impressions - self.global_clicks)
            alpha, beta = shrunk_params(
                self.forum_clicks, self.forum_failures, g_alpha, g_beta, strength
            )
            cached = self._forum_posteriors[strength] = (_frozen(alpha), _frozen(beta))
        return cached

    @cached_property
    def _decayed(self) -> dict[float, Candidates]:
        return {}

    def decayed(self, half_life: float) -> Candidates:
        """These candidates with every count decayed to ``as_of`` (cached per half-life).

        A count updated at time u is multiplied by ``2 ** (-(as_of - u) / half_life)``
        (:func:`bandits.forgetting.decay_factor`); impressions and clicks by the same factor,
        so clicks stay <= impressions. ``half_life`` is assumed valid (policies check it).

        Raises:
            ValueError: if the candidates have no count times (``post_counted_at``).
        """
        cached = self._decayed.get(half_life)
        if cached is not None:
            return cached
        if self.post_counted_at is None or self.forum_counted_at is None or self.as_of is None:
            raise ValueError("a policy with a half_life needs post_counted_at, forum_counted_at")
        post = decay_factor(self.as_of - self.post_counted_at, half_life)
        forum = decay_factor(self.as_of - self.forum_counted_at, half_life)
        cached = self._decayed[half_life] = Candidates.unchecked(
            post_forum=self.post_forum,
            post_impressions=_frozen(self.post_impressions * post),
            post_clicks=_frozen(self.post_clicks * post),
            forum_impressions=_frozen(self.forum_impressions * forum),
            forum_clicks=_frozen(self.forum_clicks * forum),
            post_created_at=self.post_created_at,
        )
        return cached

    def posts_in(self, forums: IntArray) -> IntArray:
        """Indices of the posts of the given distinct forums, grouped by forum."""
        starts, ends = self.forum_starts[forums], self.forum_starts[forums + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        return self.posts_by_forum[np.arange(total, dtype=np.intp) + offsets]
