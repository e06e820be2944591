"""Slates (ranked lists of chosen posts) and the top-n-with-cap ranking they come from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bandits.candidates import IntArray
from bandits.posterior import FloatArray

_EMPTY_INT = np.zeros(0, np.intp)
_EMPTY_FLOAT = np.zeros(0, np.float64)


@dataclass(frozen=True, eq=False)
class Slate:
    """The posts chosen for one request, in rank order (rank 1 first).

    Attributes:
        posts: indices into the candidate posts, distinct.
        scores: the sampled (Thompson), mean (greedy) or random (random) score of each post.
        alpha, beta: the posterior Beta parameters of each post the policy used.
        policy: name of the policy that chose the slate.
        eligible: how many candidate posts were eligible (allowed forums, not excluded).
        propensities: for policies that know it exactly (``explore``), the probability that
            the policy put each post at its position; ``None`` otherwise.
    """

    posts: IntArray
    scores: FloatArray
    alpha: FloatArray
    beta: FloatArray
    policy: str
    eligible: int = 0
    propensities: FloatArray | None = None

    @classmethod
    def empty(cls, policy: str) -> Slate:
        """A slate with no posts."""
        return cls(_EMPTY_INT, _EMPTY_FLOAT, _EMPTY_FLOAT, _EMPTY_FLOAT, policy)

    def __len__(self) -> int:
        return int(self.posts.shape[0])


def top_sorted(scores: FloatArray, k: int) -> IntArray:
    """Positions of the ``k`` largest scores, largest first (``k <= len(scores)``)."""
    if k <= 0:
        return _EMPTY_INT
    if k >= scores.shape[0]:
        return np.argsort(-scores, kind="stable").astype(np.intp)
    top = np.argpartition(scores, scores.shape[0] - k)[-k:]
    return top[np.argsort(-scores[top], kind="stable")].astype(np.intp)


def rank_within_group(groups: IntArray) -> IntArray:
    """For a sequence of group labels, how many earlier items share each item's label."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    steps = np.arange(order.shape[0])
    first = np.ones(order.shape[0], bool)
    np.not_equal(sorted_groups[1:], sorted_groups[:-1], out=first[1:])
    group_start = np.maximum.accumulate(np.where(first, steps, 0))
    ranks = np.empty_like(order)
    ranks[order] = steps - group_start
    return ranks


def top_with_cap(
    scores: FloatArray, forums: IntArray | None, n: int, n_valid: int, cap: int | None
) -> IntArray:
    """Positions of the best ``n`` scores, at most ``cap`` per forum, best first.

    Only the ``n_valid`` largest scores are eligible (the others are ``-inf``). Without a
    cap the result has ``min(n, n_valid)`` positions; with one it stops when no eligible
    forum has room left. The candidate pool doubles until the slate is full, so the usual
    cost is one ``argpartition``.
    """
    k = min(n, n_valid)
    if cap is None or cap >= k:
        return top_sorted(scores, k)
    if forums is None:
        raise ValueError("forums are required with a per-forum cap")
    pool_size = min(n_valid, 4 * n)
    while True:
        pool = top_sorted(scores, pool_size)
        chosen = pool[rank_within_group(forums[pool]) < cap][:k]
        if chosen.shape[0] == k or pool_size == n_valid:
            return chosen
        pool_size = min(n_valid, 2 * pool_size)
