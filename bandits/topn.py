"""A Thompson draw that does not grow with every candidate: draw only the posts that can
enter the slate, exact up to a stated tail probability ``delta``.

``select`` of :class:`~bandits.policies.TwoLevelTS` and :class:`~bandits.policies.FlatTS`
draws one Beta sample per eligible post and keeps the best ``n`` (at most ``cap`` per forum).
Almost all of those draws cannot matter: a post with 2,000 impressions at 2 % will not draw
above the tenth best of 100,000 posts. :class:`TopNSampler` draws the forum CTRs as the
policy does, then only the posts whose draw could reach the slate.

Method. Notation: P candidates, ``theta_f`` the request's forum CTR, ``Beta(a_p(t), b_p(t))``
post p's draw distribution given its forum's CTR t (the policy's, with ``exploration``
applied; for ``flat_ts`` it does not depend on t), ``tail = delta / P``.

At refresh (:meth:`TopNSampler.build`, once per ``Candidates``):

* per forum, an upper CTR ``t_f``: the ``1 - forum_tail`` quantile of the forum's posterior
  (its posterior mean with ``forum_draw=False``, which never draws);
* per post, ``hi_p`` with ``P(Beta(a_p(t_f), b_p(t_f)) > hi_p) <= tail``
  (:func:`upper_quantile`: the exact quantile of Beta(a', b') with a' >= a rounded up and
  b' <= b rounded down on a grid of relative step 1/64, so one quantile serves many posts).
  ``a_p(t)`` grows and ``b_p(t)`` shrinks with t, and Beta(a, b) grows stochastically with a
  and shrinks with b, so for every ``theta_f <= t_f``, ``P(theta_p > hi_p | theta_f) <= tail``;
* the posts sorted by ``hi_p``, and the best 1,024 by the seed score of step 2.

Per request (:meth:`TopNSampler.select`):

1. Draw every forum's ``theta_f`` exactly as the policy does. A forum with ``theta_f > t_f``
   (probability ``forum_tail`` per forum and request) is *hot*: its eligible posts are all
   drawn, so the bound above is only ever used for posts of forums with ``theta_f <= t_f``.
2. Draw the eligible posts among the first m of the ``hi`` order, the first 4 m of the seed
   order (mean + 3 standard deviations, at the forums' mean CTRs; m = max(64, 8 n) times
   P / eligible, rounded up) and of the hot forums, and rank them as the policy does (top n,
   cap). While that slate is not full (exclusions, caps), quadruple m.
3. Let T be the score of the slate's last post. Draw every eligible post not yet drawn with
   ``hi_p >= T`` and rank again. Nothing drawn is drawn again.
4. If step 3 would draw more than a quarter of the candidates (a flat posterior: everything
   uncertain), draw every remaining eligible post instead: the full draw, exact.

Why it is exact up to ``delta``. Couple the request with the full draw: each post's draw is
the same Beta variable whether or not it is read, and which posts are read depends only on
the values already read, so the drawn values have the full draw's distribution and the
undrawn ones stay independent of them. Ranking top n with a per-forum cap is picking a
maximum-weight basis of a (truncated partition) matroid greedily, so adding posts never
lowers the k-th score of the slate (Gale's theorem): T after step 3 is >= T of step 2 >
``hi_p`` for every undrawn post. The greedy pass over all posts meets the slate's posts in
the same order and is full before any post below T, so the two slates are identical unless
some undrawn eligible post drew above its ``hi_p``. By the union bound, for U undrawn
eligible posts (all in forums that are not hot)::

    P(slate != full draw's slate) <= U * tail <= P * tail = delta

and hence the total variation distance between the slate's distribution and the full
draw's is at most ``delta`` (:attr:`Trace.bound` reports ``U * tail`` per request). The forum
draws are exact; ``forum_tail`` only trades the cost of hot forums against tighter ``hi``.
Slates with fewer than min(n, eligible) posts (a binding cap) are only returned after every
eligible post was drawn (step 2), so they are exact. The random stream is used differently
from ``policy.select``: a seed gives another (equally distributed) slate.

Falls back to ``policy.select`` (before any draw, so the choice does not depend on the
draw) when the policy is not ``two_level_ts`` / ``flat_ts``, or fewer than ``min_candidates``
posts are eligible (default 4,000; below that the full draw is cheaper than the bookkeeping),
or when the build's probe draws found the posterior too flat for pruning to pay (most posts
new: nearly every request would go to step 4 after paying for steps 2-3).

How the service uses it. Each snapshot of a web process builds ``TopNSampler.build(arm.policy,
cands)`` on its refresh thread for every arm it serves (the default arm, or each variant's
on that variant's candidates: app/samplers.py), keeps it next to the candidates
(``app.snapshot_data.Snapshot.samplers``) and keeps the previous sampler when the snapshot
kept the previous candidates and policy; ``app.service._choose`` draws through
``Snapshot.select``, which calls ``sampler.select(n, rng, allowed_forums=...,
exclude=..., per_forum_cap=...)``: the same arguments, errors and
:class:`~bandits.slate.Slate` as ``policy.select``. Only samplers that can prune are kept
(others draw with ``policy.select`` directly). The sampler is immutable, so greenlets share
it. Its build cost (docs/benchmarks.md, bandits section: tens of ms at 20,000-100,000
candidates, mostly the Beta quantiles and one sort) is paid per refresh on the refresh
thread. ``select_traced`` gives the path taken (pruned / full / policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import special

from bandits.candidates import Candidates, IntArray
from bandits.eligibility import check_cap, check_indices, check_n, check_rng
from bandits.policies import (
    FlatTS,
    Policy,
    TwoLevelTS,
    _clip_unit,
    _draw,
    _flat_params,
    _forum_means,
    _hier_params,
    _Request,
    _statistics,
)
from bandits.posterior import FloatArray
from bandits.slate import Slate, top_sorted

#: Mantissa bits kept by the quantile grid of :func:`upper_quantile` (relative step 1/64).
GRID_BITS = 6
_DROP = 52 - GRID_BITS
_LOW_MASK = np.int64((1 << _DROP) - 1)
#: How many posts the seed order keeps (step 2 takes at most this many from it).
SEED_ORDER = 1_024
#: Step 3 draws everything when it would draw more than this share of the candidates.
WIDE_SHARE = 0.25
#: The slate size at which :meth:`TopNSampler.build` tells whether pruning pays.
PROBE_N = 10


def upper_quantile(alpha: FloatArray, beta: FloatArray, tail: float) -> FloatArray:
    """For each Beta(alpha, beta), a q with ``P(X > q) <= tail`` (parameters > 0, finite).

    alpha is rounded up and beta down to floats with ``GRID_BITS`` mantissa bits (bit
    patterns of positive floats are ordered like their values), a distribution that is
    stochastically larger, and the exact quantile of each distinct rounded pair is computed
    once: ``1 - I^{-1}(beta', alpha'; tail)``, the accurate side. The inverse is shrunk by
    1e-9 of itself and by 2.3e-16 against rounding; a failed inverse gives q = 1.
    """
    a_up = (np.ascontiguousarray(alpha, np.float64).view(np.int64) + _LOW_MASK) >> _DROP
    b_down = np.ascontiguousarray(beta, np.float64).view(np.int64) >> _DROP
    keys, where = np.unique((a_up << 20) | b_down, return_inverse=True)
    a_grid = ((keys >> 20) << _DROP).view(np.float64)
    b_grid = ((keys & ((1 << 20) - 1)) << _DROP).view(np.float64)
    # Shrunk against the inverse's relative error and the rounding of 1 - low (half an ulp
    # of 1); a failed inverse or one below that rounding gives q = 1.
    low = special.betaincinv(b_grid, a_grid, tail) * (1.0 - 1e-9) - 2.3e-16
    quantile = np.where(np.isfinite(low) & (low > 0), 1.0 - low, 1.0)
    return np.asarray(quantile[where.reshape(-1)], np.float64)


def _check_unit(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class Trace:
    """How one request was served (for tests, benchmarks and metrics).

    Attributes:
        path: ``"pruned"``; ``"full"`` (every eligible post drawn, exact); or ``"policy"``
            (delegated to ``policy.select`` before any draw: unsupported policy or too few
            eligible posts).
        eligible: eligible posts; drawn: how many of them were drawn.
        bound: upper bound on the probability that this slate differs from the full draw's
            under the coupling of the module docstring: undrawn eligible posts * tail.
        threshold: the score T of step 3 (``nan`` unless pruned).
        hot_forums: forums whose draw exceeded their upper CTR.
        posts, scores: the drawn posts (candidate indices) and their draws.
        forum_ctr: the request's forum CTRs (``two_level_ts``), else ``None``.
    """

    path: str
    eligible: int
    drawn: int
    bound: float
    threshold: float = float("nan")
    hot_forums: int = 0
    posts: IntArray | None = None
    scores: FloatArray | None = None
    forum_ctr: FloatArray | None = None


class _Eligible(NamedTuple):
    """A request's eligibility: allowed forums (mask or None), excluded posts (a mask over
    the candidates, which the request's draws then extend), how many posts are eligible."""

    forum_ok: npt.NDArray[np.bool_] | None
    excluded: npt.NDArray[np.bool_]
    size: int

    @classmethod
    def of(
        cls, cands: Candidates, allowed_forums: npt.ArrayLike | None, exclude: npt.ArrayLike | None
    ) -> _Eligible:
        """Raises ``ValueError`` for indices out of range, as ``Policy.select``."""
        excluded = np.zeros(cands.n_posts, bool)
        if exclude is not None:
            # A mask rather than np.unique: 10,000 exclusions cost 1-3 ms to sort or hash.
            excluded[check_indices("exclude", exclude, cands.n_posts, "post")] = True
        if allowed_forums is None:
            size = cands.n_posts - (0 if exclude is None else int(np.count_nonzero(excluded)))
            return cls(None, excluded, size)
        forums = np.unique(check_indices("allowed_forums", allowed_forums, cands.n_forums, "forum"))
        forum_ok = np.zeros(cands.n_forums, bool)
        forum_ok[forums] = True
        size = int(cands.forum_post_counts[forums].sum())
        if exclude is not None:
            size -= int(np.count_nonzero(forum_ok[cands.post_forum[np.flatnonzero(excluded)]]))
        return cls(forum_ok, excluded, size)


class _Draws:
    """The posts drawn so far in one request, each once, with their parameters and draws."""

    def __init__(self, sampler: TopNSampler, eligible: _Eligible, ctr: FloatArray | None):
        self.sampler, self.eligible, self.ctr = sampler, eligible, ctr
        self.seen = eligible.excluded
        self.parts: list[tuple[IntArray, FloatArray, FloatArray, FloatArray]] = []
        self.count = 0

    def add(self, rng: np.random.Generator, *groups: IntArray) -> None:
        """Draw the eligible posts of ``groups`` (each without repeats) not drawn yet."""
        fresh = []
        for group in groups:
            fresh.append(group[~self.seen[group]])
            self.seen[fresh[-1]] = True
        posts = fresh[0] if len(fresh) == 1 else np.concatenate(fresh)
        if self.eligible.forum_ok is not None:
            posts = posts[self.eligible.forum_ok[self.sampler.stats.post_forum[posts]]]
        if posts.size:
            self.parts.append((posts, *self.sampler.draw(posts, self.ctr, rng)))
            self.count += int(posts.size)

    def arrays(self) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
        """(posts, scores, alpha, beta) of everything drawn (empty before any post was)."""
        if not self.parts:
            none = np.zeros(0, np.float64)
            return np.zeros(0, np.intp), none, none, none
        if len(self.parts) > 1:
            posts, scores, alpha, beta = (np.concatenate(c) for c in zip(*self.parts, strict=True))
            self.parts = [(posts, scores, alpha, beta)]
        return self.parts[0]


@dataclass(frozen=True, eq=False)
class TopNSampler:
    """The refresh-time bounds of one (policy, candidates) pair; see the module docstring.

    Build it with :meth:`build`; attributes other than ``policy``, ``cands``, ``delta`` and
    ``tail`` are ``None`` when the sampler delegates every request to ``policy.select``.
    """

    policy: Policy
    cands: Candidates
    delta: float
    tail: float
    min_candidates: int
    stats: Candidates
    forum_hi: FloatArray | None = None
    post_hi: FloatArray | None = None
    by_hi: IntArray | None = None
    neg_hi_sorted: FloatArray | None = None
    by_seed: IntArray | None = None

    @classmethod
    def build(
        cls,
        policy: Policy,
        cands: Candidates,
        *,
        delta: float = 1e-4,
        forum_tail: float = 1e-3,
        min_candidates: int = 4_000,
        probe_draws: int = 1,
    ) -> TopNSampler:
        """Precompute the bounds for ``policy`` on ``cands`` (once per refresh).

        ``probe_draws`` full draws (from a generator of its own, so no request's stream is
        touched) tell whether pruning pays: when the median draw's ``PROBE_N``-th best score
        would leave step 3 more than ``WIDE_SHARE`` of the posts to draw (a flat posterior,
        as when most posts are new), nearly every request would end in the full draw after
        paying for the bookkeeping (25-40 % more than ``policy.select``), so the sampler
        delegates every request instead. 0 skips the check (always prune). One draw (the
        default) costs one full draw per build (about 12 ms at 100,000 posts); the median of
        more is steadier near the border, where either path costs about the same. Either way
        the slates are exact up to ``delta``: the check only picks the cheaper exact path.

        Raises:
            ValueError: if ``delta`` is not in [1e-12, 0.1], ``forum_tail`` not in
                [1e-9, 0.5], ``min_candidates`` or ``probe_draws`` not an integer >= 0; or,
                for a policy with a ``half_life``, the candidates have no count times.
        """
        delta = _check_unit("delta", delta, 1e-12, 0.1)
        forum_tail = _check_unit("forum_tail", forum_tail, 1e-9, 0.5)
        for name, value in (("min_candidates", min_candidates), ("probe_draws", probe_draws)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        tail = delta / max(cands.n_posts, 1)
        stats = (
            _statistics(cands, policy.half_life)
            if isinstance(policy, TwoLevelTS | FlatTS)
            else cands
        )
        base = cls(policy, cands, delta, tail, min_candidates, stats)
        if not isinstance(policy, TwoLevelTS | FlatTS) or cands.n_posts < max(min_candidates, 1):
            return base
        forum_hi, (alpha, beta), mean = _bounds_params(policy, stats, forum_tail)
        post_hi = upper_quantile(alpha, beta, tail)
        by_hi = np.argsort(-post_hi).astype(np.intp)
        if not _pruning_pays(policy, cands, -post_hi[by_hi], probe_draws):
            return base
        return cls(
            policy, cands, delta, tail, min_candidates, stats, forum_hi, post_hi, by_hi,
            -post_hi[by_hi], top_sorted(mean, min(SEED_ORDER, cands.n_posts)),
        )  # fmt: skip

    @property
    def active(self) -> bool:
        """Whether requests may be pruned (else every one goes to ``policy.select``)."""
        return self.by_hi is not None

    def select(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        allowed_forums: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
        per_forum_cap: int | None = None,
    ) -> Slate:
        """``policy.select(cands, n, rng, ...)`` by the method of the module docstring.

        Raises:
            ValueError: as :meth:`Policy.select <bandits.policies.Policy.select>`.
        """
        return self.select_traced(
            n, rng, allowed_forums=allowed_forums, exclude=exclude, per_forum_cap=per_forum_cap
        )[0]

    def select_traced(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        allowed_forums: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
        per_forum_cap: int | None = None,
    ) -> tuple[Slate, Trace]:
        """:meth:`select`, with the :class:`Trace` of how the slate was drawn."""
        n, cap = check_n(n), check_cap(per_forum_cap)
        check_rng(rng)
        eligible = _Eligible.of(self.cands, allowed_forums, exclude)
        if not self.active or eligible.size < max(self.min_candidates, 1):
            slate = self.policy.select(
                self.cands, n, rng, allowed_forums=allowed_forums, exclude=exclude,
                per_forum_cap=cap,
            )  # fmt: skip
            return slate, Trace("policy", eligible.size, eligible.size, 0.0)
        return self._pruned(n, cap, rng, eligible)

    def draw(
        self, posts: IntArray, ctr: FloatArray | None, rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(scores, alpha, beta) of ``posts`` given the forum CTRs, as the policy draws them."""
        policy: Any = self.policy
        if isinstance(policy, FlatTS):
            alpha, beta = _flat_params(self.stats, posts, (policy.prior_alpha, policy.prior_beta))
            return rng.beta(alpha, beta), alpha, beta
        assert ctr is not None
        alpha, beta = _hier_params(self.stats, posts, ctr, policy.prior_strength)
        return _draw(alpha, beta, policy.exploration, rng), alpha, beta

    def _forum_ctr(self, rng: np.random.Generator) -> tuple[FloatArray | None, IntArray]:
        """The request's forum CTRs (drawn as the policy does) and its hot forums."""
        policy = self.policy
        if not isinstance(policy, TwoLevelTS):
            return None, np.zeros(0, np.intp)
        if not policy.forum_draw:
            return self.forum_hi, np.zeros(0, np.intp)
        f_alpha, f_beta = self.stats.forum_posterior(policy.forum_prior_strength)
        ctr = _clip_unit(rng.beta(f_alpha, f_beta))
        assert self.forum_hi is not None
        return ctr, np.flatnonzero(ctr > self.forum_hi).astype(np.intp)

    def _rank(self, draws: _Draws, n: int, cap: int | None, rng: np.random.Generator) -> IntArray:
        posts, scores, _, _ = draws.arrays()
        forums = None if cap is None else self.stats.post_forum[posts]
        # The supported policies rank without the generator: draws stay the only use of rng.
        return self.policy._rank(scores, forums, _Request(n, cap, int(posts.shape[0])), rng)

    def _pruned(
        self, n: int, cap: int | None, rng: np.random.Generator, eligible: _Eligible
    ) -> tuple[Slate, Trace]:
        by_hi, by_seed = self.by_hi, self.by_seed
        assert by_hi is not None and by_seed is not None and self.neg_hi_sorted is not None
        ctr, hot = self._forum_ctr(rng)
        draws = _Draws(self, eligible, ctr)
        # Scaled by the eligible share, so that allowed forums still seed a full slate.
        size = min(max(64, 8 * n) * -(-self.cands.n_posts // eligible.size), self.cands.n_posts)
        draws.add(rng, by_hi[:size], by_seed[: 4 * size], self.stats.posts_in(hot))
        k = min(n, eligible.size)
        pos = self._rank(draws, n, cap, rng)
        while pos.shape[0] < k and draws.count < eligible.size:
            size *= 4
            draws.add(rng, by_hi[:size])
            pos = self._rank(draws, n, cap, rng)
        threshold = float("nan")
        if draws.count < eligible.size:
            threshold = float(draws.arrays()[1][pos].min())
            reach = int(np.searchsorted(self.neg_hi_sorted, -threshold, side="right"))
            wide = reach > WIDE_SHARE * self.cands.n_posts
            draws.add(rng, np.flatnonzero(~draws.seen) if wide else by_hi[:reach])
            pos = self._rank(draws, n, cap, rng)
        return self._finish(draws, pos, eligible, threshold, int(hot.shape[0]))

    def _finish(
        self, draws: _Draws, pos: IntArray, eligible: _Eligible, threshold: float, hot: int
    ) -> tuple[Slate, Trace]:
        posts, scores, alpha, beta = draws.arrays()
        pos = self.policy._order(pos, alpha, beta)
        slate = Slate(
            posts[pos], scores[pos], alpha[pos], beta[pos], self.policy.name, eligible.size
        )
        undrawn = eligible.size - draws.count
        path = "pruned" if undrawn else "full"
        trace = Trace(
            path, eligible.size, draws.count, undrawn * self.tail,
            threshold if undrawn else float("nan"), hot, posts, scores, draws.ctr,
        )  # fmt: skip
        return slate, trace


def _pruning_pays(
    policy: TwoLevelTS | FlatTS, cands: Candidates, neg_hi_sorted: FloatArray, draws: int
) -> bool:
    """Whether the median of ``draws`` full draws leaves step 3 at most ``WIDE_SHARE`` of the
    posts to draw (:meth:`TopNSampler.build`); True for ``draws`` 0."""
    if not draws:
        return True
    rng = np.random.default_rng(0)  # deterministic, and no request's stream
    k = min(PROBE_N, cands.n_posts)
    reach = []
    for _ in range(draws):
        scores = policy._score(cands, None, rng)[0]
        threshold = float(np.partition(scores, -k)[-k])
        reach.append(int(np.searchsorted(neg_hi_sorted, -threshold, side="right")))
    return float(np.median(reach)) <= WIDE_SHARE * cands.n_posts


def _bounds_params(
    policy: TwoLevelTS | FlatTS, stats: Candidates, forum_tail: float
) -> tuple[FloatArray | None, tuple[FloatArray, FloatArray], FloatArray]:
    """(upper forum CTRs, the post draw parameters at them, seed scores) for :meth:`build`."""
    if isinstance(policy, FlatTS):
        alpha, beta = _flat_params(stats, None, (policy.prior_alpha, policy.prior_beta))
        return None, (alpha, beta), _likely_high(alpha, beta)
    strength, forum_strength = policy.prior_strength, policy.forum_prior_strength
    means = _forum_means(stats, forum_strength)
    forum_hi = means
    if policy.forum_draw:
        f_alpha, f_beta = stats.forum_posterior(forum_strength)
        forum_hi = _clip_unit(1.0 - special.betaincinv(f_beta, f_alpha, forum_tail))
    alpha, beta = _hier_params(stats, None, forum_hi, strength)
    m_alpha, m_beta = _hier_params(stats, None, means, strength)
    scaled = (alpha / policy.exploration, beta / policy.exploration)
    return forum_hi, scaled, _likely_high(m_alpha / policy.exploration, m_beta / policy.exploration)


def _likely_high(alpha: FloatArray, beta: FloatArray) -> FloatArray:
    """Mean plus three standard deviations: which posts tend to draw high (the seed order)."""
    total = alpha + beta
    return np.asarray(alpha / total + 3.0 * np.sqrt(alpha * beta / (total * total * (total + 1))))
