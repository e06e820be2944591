"""Slate policies: two-level Thompson sampling and the baselines it must beat.

Every policy is a small frozen dataclass whose parameters are checked once, at
construction. ``select`` takes a :class:`~bandits.candidates.Candidates` snapshot, the slate
size ``n`` and an injected ``numpy.random.Generator`` and returns a
:class:`~bandits.slate.Slate`; it is a pure function of its arguments and the generator
state, so a given seed reproduces the slate.

Two-level Thompson sampling (``two_level_ts``), for one request:

1. Forum level. For every forum f draw ``theta_f ~ Beta(alpha_f, beta_f)``, the forum's
   posterior: a prior centred on the global posterior mean with ``forum_prior_strength``
   pseudo-impressions, updated by the forum's clicks and impressions.
2. Post level. For every eligible post p of forum f draw
   ``theta_p ~ Beta(s * theta_f + clicks_p, s * (1 - theta_f) + impressions_p - clicks_p)``
   with ``s = prior_strength``: the post's prior is centred on its forum's *sampled* CTR,
   so one forum draw moves all of that forum's posts together (forum-level exploration),
   while each post's own draw ranks it against every other post (post-level exploration).
   ``theta_f`` is clipped to [1e-12, 1 - 1e-12] so both parameters stay > 0.
3. The slate holds the ``n`` eligible posts with the largest ``theta_p``, skipping a post
   whose forum already holds ``per_forum_cap`` posts of the slate.
4. The chosen posts are ordered by posterior mean ``alpha / (alpha + beta)`` (with the
   prior centred on ``theta_f``), best first: the draw decides *which* posts are shown, the
   current belief decides *where*, so an exploratory pick sits in a lower slot, which is
   seen less. ``order="sample"`` keeps the order of the draws (plain Thompson ranking).

Steps 1 and 2 are one draw from the joint posterior of the hierarchical model (forum CTR
first, then post CTR given the forum CTR), i.e. Thompson sampling for that model. With
``forum_draw=False`` step 1 uses the forum's posterior mean instead of a draw (an ablation).
Steps 1 and 2 are one vectorised ``Generator.beta`` call each, step 3 one
``argpartition``, step 4 a sort of the n chosen posts; nothing loops over posts.
The measured effect of each step is in docs/quality.md.

Baselines, behind the same interface:

* ``flat_ts``: Beta(1, 1) prior per post, no hierarchy, posts ranked by their draws.
* ``greedy``: posts ranked by posterior mean ("most clicked" per impression); the flat
  Beta(1, 1) prior unless ``prior_strength`` is given, then the hierarchical prior.
* ``epsilon_greedy``: the greedy slate, except that each of the n slots is, with probability
  ``epsilon``, given to a uniformly random eligible post (placed in a random slot).
* ``random``: uniformly random eligible posts.
* ``recent``: the newest eligible posts first (a forum's homepage before it has a
  recommender); needs ``Candidates.post_created_at``.
* ``explore``: a uniformly random ordering of the eligible posts, with the exact
  probability of each post at its position (``Slate.propensities``) for off-policy
  evaluation; it ignores the per-forum cap, which would make that probability inexact.

Greedy ties (for example between new posts) are broken at random by a jitter below 1e-12.

Forgetting: ``two_level_ts``, ``flat_ts``, ``greedy`` and ``epsilon_greedy`` take a
``half_life`` (``None``, the default: counts are used as given). With a half-life they read
every post and forum count decayed to the snapshot time, ``2 ** (-age / half_life)`` per
unit of count (:meth:`Candidates.decayed <bandits.candidates.Candidates.decayed>`, the
discounting of Raj & Kalyani 2017 by elapsed time). The prior is not decayed: a post
nobody has seen for a while returns to its prior, centred on its forum (whose counts decay
too, towards the global mean), instead of keeping old evidence or an ever-wider posterior.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from bandits.candidates import Candidates, IntArray
from bandits.eligibility import check_cap, check_n, check_rng, eligible_pool
from bandits.forgetting import check_half_life
from bandits.posterior import FloatArray, check_strength
from bandits.slate import Slate, top_with_cap

Scored = tuple[FloatArray, FloatArray, FloatArray]

_CLIP = 1e-12
_TIE_JITTER = 1e-12


def _take(values: FloatArray | IntArray, index: IntArray | None) -> Any:
    return values if index is None else values[index]


def _flat_params(
    cands: Candidates, index: IntArray | None, prior: tuple[float, float]
) -> tuple[FloatArray, FloatArray]:
    alpha = _take(cands.post_clicks, index) + prior[0]
    beta = _take(cands.post_failures, index) + prior[1]
    return alpha, beta


def _hier_params(
    cands: Candidates, index: IntArray | None, forum_ctr: FloatArray, strength: float
) -> tuple[FloatArray, FloatArray]:
    """Post parameters with priors centred on the given per-forum CTRs (in (0, 1))."""
    forum = _take(cands.post_forum, index)
    alpha = (strength * forum_ctr).take(forum)
    alpha += _take(cands.post_clicks, index)
    beta = (strength * (1.0 - forum_ctr)).take(forum)
    beta += _take(cands.post_failures, index)
    return alpha, beta


def _statistics(cands: Candidates, half_life: float | None) -> Candidates:
    """The counts a policy reads: as given, or decayed to the snapshot time."""
    return cands if half_life is None else cands.decayed(half_life)


def _forum_means(cands: Candidates, strength: float) -> FloatArray:
    f_alpha, f_beta = cands.forum_posterior(strength)
    return _clip_unit(f_alpha / (f_alpha + f_beta))


def check_exploration(value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number in [0.01, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 1:
        raise ValueError(f"exploration must be in [0.01, 1], got {value!r}")


def _draw(
    alpha: FloatArray, beta: FloatArray, exploration: float, rng: np.random.Generator
) -> FloatArray:
    """One draw per post from Beta(alpha, beta) with its variance scaled by ``exploration``.

    Beta(alpha / e, beta / e) keeps the mean alpha / (alpha + beta) and scales the variance
    by about e (exactly (alpha + beta + 1) e / (alpha + beta + e)); e = 1 is the posterior.
    """
    if exploration == 1.0:
        return rng.beta(alpha, beta)
    return rng.beta(alpha / exploration, beta / exploration)


def _clip_unit(ctr: FloatArray) -> FloatArray:
    """Keep CTRs in [1e-12, 1 - 1e-12] so that priors centred on them are proper."""
    np.maximum(ctr, _CLIP, out=ctr)
    return np.minimum(ctr, 1.0 - _CLIP, out=ctr)


def _with_ties_broken(means: FloatArray, rng: np.random.Generator) -> FloatArray:
    return means + rng.random(means.shape[0]) * _TIE_JITTER


class _Request(NamedTuple):
    n: int
    cap: int | None
    n_valid: int


class Policy(ABC):
    """A slate policy. Subclasses score the eligible posts; ranking is shared."""

    name: ClassVar[str]

    def select(
        self,
        cands: Candidates,
        n: int,
        rng: np.random.Generator,
        *,
        allowed_forums: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
        per_forum_cap: int | None = None,
    ) -> Slate:
        """Choose up to ``n`` distinct posts from ``cands``, best first.

        Eligible posts are those of ``allowed_forums`` (all forums if ``None``) not in
        ``exclude``. The slate holds ``min(n, eligible)`` posts, or fewer when
        ``per_forum_cap`` leaves no eligible forum with room; no eligible post gives an
        empty slate.

        Raises:
            ValueError: if ``n`` is not an integer >= 1, ``rng`` is not a numpy Generator,
                ``per_forum_cap`` is not ``None`` or an integer >= 1, or an index in
                ``allowed_forums`` / ``exclude`` is outside [0, F) / [0, P).
        """
        n, cap = check_n(n), check_cap(per_forum_cap)
        check_rng(rng)
        pool = eligible_pool(cands, allowed_forums, exclude)
        if pool.size == 0:
            return Slate.empty(self.name)
        scores, alpha, beta = self._score(cands, pool.posts, rng)
        if pool.blank is not None:
            scores[pool.blank] = -np.inf
        forums = None if cap is None else _take(cands.post_forum, pool.posts)
        pos = self._rank(scores, forums, _Request(n, cap, pool.size), rng)
        pos = self._order(pos, alpha, beta)
        posts = pos if pool.posts is None else pool.posts[pos]
        return Slate(posts, scores[pos], alpha[pos], beta[pos], self.name, pool.size)

    @abstractmethod
    def _score(self, cands: Candidates, index: IntArray | None, rng: np.random.Generator) -> Scored:
        """(scores, alpha, beta) of the posts ``index`` (all posts if ``None``)."""

    def _rank(
        self,
        scores: FloatArray,
        forums: IntArray | None,
        request: _Request,
        rng: np.random.Generator,
    ) -> IntArray:
        return top_with_cap(scores, forums, request.n, request.n_valid, request.cap)

    def _order(self, pos: IntArray, alpha: FloatArray, beta: FloatArray) -> IntArray:
        """The final slot order of the chosen positions (default: as ranked)."""
        return pos


@dataclass(frozen=True)
class TwoLevelTS(Policy):
    """Two-level Thompson sampling with hierarchical priors (see the module docstring).

    Raises:
        ValueError: if a strength is outside [1e-3, 1e9] or ``half_life`` is not ``None`` or
            a finite number > 0; from ``select``, with a ``half_life``, if the candidates
            have no count times.
    """

    name: ClassVar[str] = "two_level_ts"
    prior_strength: float = 10.0
    forum_prior_strength: float = 10.0
    forum_draw: bool = True
    order: str = "mean"
    exploration: float = 1.0
    half_life: float | None = None

    def __post_init__(self) -> None:
        check_strength("prior_strength", self.prior_strength)
        check_strength("forum_prior_strength", self.forum_prior_strength)
        check_exploration(self.exploration)
        check_half_life(self.half_life)
        if not isinstance(self.forum_draw, bool):
            raise ValueError(f"forum_draw must be True or False, got {self.forum_draw!r}")
        if self.order not in ("mean", "sample"):
            raise ValueError(f"order must be 'mean' or 'sample', got {self.order!r}")

    def _score(self, cands: Candidates, index: IntArray | None, rng: np.random.Generator) -> Scored:
        cands = _statistics(cands, self.half_life)
        if self.forum_draw:
            f_alpha, f_beta = cands.forum_posterior(self.forum_prior_strength)
            forum_ctr = _clip_unit(rng.beta(f_alpha, f_beta))
        else:
            forum_ctr = _forum_means(cands, self.forum_prior_strength)
        alpha, beta = _hier_params(cands, index, forum_ctr, self.prior_strength)
        return _draw(alpha, beta, self.exploration, rng), alpha, beta

    def _rank(
        self,
        scores: FloatArray,
        forums: IntArray | None,
        request: _Request,
        rng: np.random.Generator,
    ) -> IntArray:
        k = min(request.n, request.n_valid)
        if self.order == "sample" or request.cap is not None or k >= scores.shape[0]:
            return super()._rank(scores, forums, request, rng)
        # _order sorts the chosen posts by mean, so their order by score is not needed.
        return np.argpartition(scores, scores.shape[0] - k)[-k:].astype(np.intp)

    def _order(self, pos: IntArray, alpha: FloatArray, beta: FloatArray) -> IntArray:
        if self.order == "sample":
            return pos
        mean = alpha[pos] / (alpha[pos] + beta[pos])
        return pos[np.argsort(-mean, kind="stable")]


@dataclass(frozen=True)
class FlatTS(Policy):
    """Thompson sampling with an independent Beta(prior_alpha, prior_beta) prior per post.

    Raises:
        ValueError: if a prior parameter is outside [1e-3, 1e9] or ``half_life`` is invalid
            (as for :class:`TwoLevelTS`).
    """

    name: ClassVar[str] = "flat_ts"
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    half_life: float | None = None

    def __post_init__(self) -> None:
        check_strength("prior_alpha", self.prior_alpha)
        check_strength("prior_beta", self.prior_beta)
        check_half_life(self.half_life)

    def _score(self, cands: Candidates, index: IntArray | None, rng: np.random.Generator) -> Scored:
        cands = _statistics(cands, self.half_life)
        alpha, beta = _flat_params(cands, index, (self.prior_alpha, self.prior_beta))
        return rng.beta(alpha, beta), alpha, beta


def _mean_params(
    cands: Candidates, index: IntArray | None, prior_strength: float | None
) -> tuple[FloatArray, FloatArray]:
    if prior_strength is None:
        return _flat_params(cands, index, (1.0, 1.0))
    return _hier_params(cands, index, _forum_means(cands, prior_strength), prior_strength)


def _check_optional_strength(value: float | None) -> None:
    if value is not None:
        check_strength("prior_strength", value)


@dataclass(frozen=True)
class Greedy(Policy):
    """Rank by posterior mean: flat Beta(1, 1), or hierarchical if ``prior_strength`` is set.

    The hierarchical variant uses ``prior_strength`` at both the forum and the post level.

    Raises:
        ValueError: if ``prior_strength`` is not ``None`` or in [1e-3, 1e9], or ``half_life``
            is invalid (as for :class:`TwoLevelTS`).
    """

    name: ClassVar[str] = "greedy"
    prior_strength: float | None = None
    half_life: float | None = None

    def __post_init__(self) -> None:
        _check_optional_strength(self.prior_strength)
        check_half_life(self.half_life)

    def _score(self, cands: Candidates, index: IntArray | None, rng: np.random.Generator) -> Scored:
        cands = _statistics(cands, self.half_life)
        alpha, beta = _mean_params(cands, index, self.prior_strength)
        return _with_ties_broken(alpha / (alpha + beta), rng), alpha, beta


@dataclass(frozen=True)
class EpsilonGreedy(Greedy):
    """Greedy, but each slot goes with probability ``epsilon`` to a random eligible post.

    The number of explored slots is Binomial(n, epsilon); the explored posts are uniform
    among the eligible posts not otherwise chosen, and take uniformly random slots. Their
    score is their posterior mean, so the slate is not in score order.

    Raises:
        ValueError: if ``epsilon`` is not in [0, 1] or ``prior_strength`` is invalid.
    """

    name: ClassVar[str] = "epsilon_greedy"
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 <= eps <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {eps!r}")

    def _rank(
        self,
        scores: FloatArray,
        forums: IntArray | None,
        request: _Request,
        rng: np.random.Generator,
    ) -> IntArray:
        n, n_valid, cap = request.n, request.n_valid, request.cap
        explore = int(rng.binomial(min(n, n_valid), self.epsilon))
        if explore == 0:
            return top_with_cap(scores, forums, n, n_valid, cap)
        valid = np.flatnonzero(scores > -np.inf)
        keys = scores.copy()
        keys[rng.choice(valid, size=explore, replace=False)] = 2.0 + rng.random(explore)
        pos = top_with_cap(keys, forums, n, n_valid, cap)
        return _scatter_explored(pos, keys[pos] >= 2.0, rng)


def _scatter_explored(
    pos: IntArray, explored: npt.NDArray[np.bool_], rng: np.random.Generator
) -> IntArray:
    """Move the explored positions (first in ``pos``) to uniformly random slots."""
    slots = np.zeros(pos.shape[0], bool)
    slots[rng.choice(pos.shape[0], size=int(explored.sum()), replace=False)] = True
    out = np.empty_like(pos)
    out[slots] = pos[explored]
    out[~slots] = pos[~explored]
    return out


@dataclass(frozen=True)
class RandomPolicy(Policy):
    """Uniformly random eligible posts; reports the flat Beta(1, 1) posterior."""

    name: ClassVar[str] = "random"

    def _score(self, cands: Candidates, index: IntArray | None, rng: np.random.Generator) -> Scored:
        alpha, beta = _flat_params(cands, index, (1.0, 1.0))
        return rng.random(int(alpha.shape[0])), alpha, beta


@dataclass(frozen=True)
class Recent(Policy):
    """The newest eligible posts first, by ``Candidates.post_created_at``; flat Beta(1, 1).

    Filters and the per-forum cap apply as for every policy; ties keep candidate order.

    Raises:
        ValueError (from ``select``): if the candidates have no ``post_created_at``, besides
            the argument errors of :meth:`Policy.select`.
    """

    name: ClassVar[str] = "recent"

    def select(
        self,
        cands: Candidates,
        n: int,
        rng: np.random.Generator,
        *,
        allowed_forums: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
        per_forum_cap: int | None = None,
    ) -> Slate:
        """:meth:`Policy.select`, ranking by creation time, newest first."""
        check_n(n)
        check_rng(rng)
        check_cap(per_forum_cap)
        _created_at(cands)
        return super().select(
            cands, n, rng, allowed_forums=allowed_forums, exclude=exclude,
            per_forum_cap=per_forum_cap,
        )  # fmt: skip

    def _score(self, cands: Candidates, index: IntArray | None, rng: np.random.Generator) -> Scored:
        alpha, beta = _flat_params(cands, index, (1.0, 1.0))
        return np.array(_take(_created_at(cands), index), dtype=np.float64), alpha, beta


def _created_at(cands: Candidates) -> FloatArray:
    if cands.post_created_at is None:
        raise ValueError("policy 'recent' needs the candidates' post_created_at")
    return cands.post_created_at


@dataclass(frozen=True)
class Explore(RandomPolicy):
    """A uniformly random ordering of the eligible posts, with exact propensities.

    The slate is the first ``min(n, E)`` posts of a uniformly random permutation of the E
    eligible posts (allowed forums, not excluded), so each eligible post is at each slot
    with probability exactly 1 / E; ``Slate.propensities`` holds that probability for every
    shown post (the logging propensity of inverse propensity scoring, e.g. Li et al.,
    "Unbiased offline evaluation of contextual-bandit-based news article recommendation
    algorithms", WSDM 2011). ``per_forum_cap`` is checked but *ignored*: a cap would make a
    post's chance depend on the draws of the other posts of its forum, so no longer 1 / E.

    Raises:
        ValueError (from ``select``): as :meth:`Policy.select`.
    """

    name: ClassVar[str] = "explore"

    def select(
        self,
        cands: Candidates,
        n: int,
        rng: np.random.Generator,
        *,
        allowed_forums: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
        per_forum_cap: int | None = None,
    ) -> Slate:
        """:meth:`Policy.select` without the per-forum cap, with ``propensities`` set."""
        check_cap(per_forum_cap)
        slate = super().select(cands, n, rng, allowed_forums=allowed_forums, exclude=exclude)
        chance = 1.0 / slate.eligible if slate.eligible else 1.0
        return dataclasses.replace(slate, propensities=np.full(len(slate), chance))


_FACTORIES: Mapping[str, Callable[..., Policy]] = {
    "two_level_ts": TwoLevelTS,
    "flat_ts": FlatTS,
    "greedy": Greedy,
    "epsilon_greedy": EpsilonGreedy,
    "random": RandomPolicy,
    "recent": Recent,
    "explore": Explore,
}

#: Names accepted by :func:`make_policy`.
POLICIES: tuple[str, ...] = tuple(_FACTORIES)


def make_policy(name: str, **params: Any) -> Policy:
    """Build the policy called ``name`` with the given parameters.

    Raises:
        ValueError: for an unknown name or parameter, or a parameter outside its limits
            (the message names the parameter and the limit).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")
    factory = _FACTORIES[name]
    accepted = sorted(f.name for f in dataclasses.fields(factory))  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for policy {name!r}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return factory(**params)
