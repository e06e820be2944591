"""Validation of the per-request arguments of ``select`` and the eligible pool they define."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from bandits.candidates import Candidates, IntArray


class Pool(NamedTuple):
    """The posts a request may show.

    Attributes:
        posts: candidate indices of the eligible posts, or ``None`` for "every post except
            ``blank``" (the common, cheap case: no gather).
        blank: candidate indices to discard after scoring (only with ``index is None``).
        size: number of eligible posts.
    """

    posts: IntArray | None
    blank: IntArray | None
    size: int


def check_n(n: int) -> int:
    """Return the slate size as an int.

    Raises:
        ValueError: if ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


def check_cap(per_forum_cap: int | None) -> int | None:
    """Return the per-forum cap (``None`` means no cap).

    Raises:
        ValueError: if the cap is not ``None`` or an integer >= 1.
    """
    if per_forum_cap is None:
        return None
    if isinstance(per_forum_cap, bool) or not isinstance(per_forum_cap, int | np.integer):
        raise ValueError(f"per_forum_cap must be None or an integer >= 1, got {per_forum_cap!r}")
    if per_forum_cap < 1:
        raise ValueError(f"per_forum_cap must be None or an integer >= 1, got {per_forum_cap!r}")
    return int(per_forum_cap)


def check_rng(rng: np.random.Generator) -> np.random.Generator:
    """Return ``rng`` if it is a numpy Generator.

    Raises:
        ValueError: otherwise (a legacy ``RandomState`` or a seed is not accepted).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_indices(name: str, values: npt.ArrayLike, limit: int, what: str) -> IntArray:
    """Return ``values`` as a 1-D intp array of indices in [0, limit).

    Raises:
        ValueError: if the values are not 1-D integers in range; the message names ``name``.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of {what} indices, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.intp)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer {what} indices, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= limit:
        raise ValueError(
            f"{name} values must be {what} indices in [0, {limit - 1}], "
            f"found {array.min() if array.min() < 0 else array.max()}"
        )
    return array.astype(np.intp, copy=False)


def eligible_pool(
    cands: Candidates, allowed_forums: npt.ArrayLike | None, exclude: npt.ArrayLike | None
) -> Pool:
    """The posts of ``allowed_forums`` (all forums if ``None``) not in ``exclude``.

    Raises:
        ValueError: for forum indices outside [0, F) or post indices outside [0, P).
    """
    if allowed_forums is None and exclude is None:
        return Pool(None, None, cands.n_posts)
    blank = None
    if exclude is not None:
        blank = np.unique(check_indices("exclude", exclude, cands.n_posts, "post"))
    if allowed_forums is None:
        size = cands.n_posts - (0 if blank is None else blank.shape[0])
        return Pool(None, blank if blank is not None and blank.size else None, size)
    forums = np.unique(check_indices("allowed_forums", allowed_forums, cands.n_forums, "forum"))
    index = cands.posts_in(forums)
    if blank is not None and blank.size:
        excluded = np.zeros(cands.n_posts, bool)
        excluded[blank] = True
        index = index[~excluded[index]]
    return Pool(index, None, int(index.shape[0]))
