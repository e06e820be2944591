"""The side of the simulation that picks slates: a policy in-process, or a peer library.

The simulator talks to a :class:`Recommender` only through post announcements, slate
requests and click feedback, the same conversation it would have with the HTTP service;
an HTTP-driving recommender (``--target URL``) can implement this protocol without
touching the environments or the runner.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bandits.candidates import Candidates, IntArray
from bandits.forgetting import decayed_update
from bandits.policies import Policy
from bandits.posterior import FloatArray

BoolArray = npt.NDArray[np.bool_]

#: Forum counts take each post's first this-many impressions, as the service does by default
#: (``BANDIT_FORUM_WINDOW``).
FORUM_WINDOW = 20


class Recommender(Protocol):
    """Anything that turns slate requests into posts and learns from the clicks."""

    def add_posts(
        self, ids: IntArray, forums: IntArray, created_at: IntArray | None = None
    ) -> None:
        """New posts (global ids, increasing) and their forums become candidates;
        ``created_at``: their creation times (visits), if the caller knows them."""

    def expire_posts(self, ids: IntArray) -> None:
        """Posts stop being candidates."""

    def recommend(
        self,
        n: int,
        *,
        allowed_forums: IntArray | None = None,
        exclude: IntArray | None = None,
        per_forum_cap: int | None = None,
    ) -> IntArray:
        """Global ids of up to ``n`` posts, best first."""

    def record(self, shown: IntArray, clicked: BoolArray) -> None:
        """Feedback for one slate: the posts that were seen (impressions) and which were clicked."""


class PolicyRecommender:
    """Runs a :class:`~bandits.policies.Policy` in-process, as the service would.

    Counts are updated on every :meth:`record`, but the policy sees a
    :class:`~bandits.candidates.Candidates` snapshot rebuilt only every ``delay``
    decisions, like asynchronous workers refreshing statistics; posts announced in between
    become candidates at the next refresh.

    Forum statistics count each post's first ``forum_window`` impressions (default
    :data:`FORUM_WINDOW`, like the service), or every impression with ``forum_window=None``.
    The first impressions are shown to new posts whatever their CTR, so the forum's CTR
    estimates a typical post's CTR instead of the CTR of the posts the policy already
    favours (which collect most impressions).

    With ``impute_pending=True`` the policy also sees the decisions made since the last
    refresh, whose feedback it does not have yet: each post chosen since then counts as one
    more impression with its posterior mean (``alpha / (alpha + beta)`` of the slate that
    chose it) as clicks. That keeps the post's mean and narrows its posterior, so a batch
    does not keep drawing a post for a chance it has already been given (the "hallucinated
    observations" of batch Bayesian optimisation). Post counts only; forum counts wait
    for the refresh. Every chosen post counts, also one in a slot the member may not see.

    Time is the number of decisions made so far (one per visit in the forum world). With a
    policy that has a ``half_life`` (:mod:`bandits.forgetting`), post and forum counts are
    decayed counters, (value, time of last update) pairs updated at the time of the
    decision whose feedback they count, and the snapshot carries their times and its own
    time (``as_of``) so that the policy reads them decayed. The forum window still counts
    each post's first impressions undecayed. Posts carry their creation time (for
    ``recent``): the one given to :meth:`add_posts`, else the time they were announced.
    """

    def __init__(
        self,
        policy: Policy,
        n_forums: int,
        delay: int,
        rng: np.random.Generator,
        forum_window: int | None = FORUM_WINDOW,
        impute_pending: bool = False,
    ) -> None:
        if delay < 1:
            raise ValueError(f"delay must be >= 1, got {delay}")
        if forum_window is not None and forum_window < 1:
            raise ValueError(f"forum_window must be None or >= 1, got {forum_window}")
        self.policy, self.delay, self.rng = policy, delay, rng
        self.forum_window, self.impute_pending = forum_window, impute_pending
        self._forum = np.zeros(0, np.intp)
        self._imps = np.zeros(0)
        self._clicks = np.zeros(0)
        self._raw_imps = np.zeros(0)
        self._counted_at = np.zeros(0)
        self._created = np.zeros(0)
        self._alive = np.zeros(0, bool)
        self._forum_imps = np.zeros(n_forums)
        self._forum_clicks = np.zeros(n_forums)
        self._forum_counted_at = np.zeros(n_forums)
        self.half_life: float | None = getattr(policy, "half_life", None)
        self._now = 0
        self._stale = delay
        self._cands: Candidates | None = None
        self._ids = np.zeros(0, np.intp)
        self._cand_of = np.zeros(0, np.intp)
        self._gone = np.zeros(0, np.intp)
        self._pending_imps = np.zeros(0)
        self._pending_clicks = np.zeros(0)

    @property
    def candidates(self) -> Candidates | None:
        """The snapshot the policy currently reads (``None`` before the first request)."""
        return self._cands

    def add_posts(
        self, ids: IntArray, forums: IntArray, created_at: IntArray | None = None
    ) -> None:
        """Announce new posts; ids must extend the existing range. Without ``created_at``
        a post is stamped with the time it is announced."""
        grow = int(ids.max()) + 1 - self._forum.shape[0]
        if grow > 0:
            self._forum = np.concatenate([self._forum, np.zeros(grow, np.intp)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, bool)])
            for name in ("_imps", "_clicks", "_raw_imps", "_counted_at", "_created"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow)]))
        self._forum[ids] = forums
        self._alive[ids] = True
        self._created[ids] = self._now if created_at is None else created_at
        self._counted_at[ids] = self._now

    def expire_posts(self, ids: IntArray) -> None:
        """Expired posts are never recommended again (until the next refresh drops them)."""
        self._alive[ids] = False
        known = ids[ids < self._cand_of.shape[0]]
        gone = self._cand_of[known]
        self._gone = np.concatenate([self._gone, gone[gone >= 0]])

    def recommend(
        self,
        n: int,
        *,
        allowed_forums: IntArray | None = None,
        exclude: IntArray | None = None,
        per_forum_cap: int | None = None,
    ) -> IntArray:
        """Ask the policy for a slate on the current (possibly stale) snapshot."""
        if self._cands is not None:
            self._now += 1  # the time of this decision: the number made before it
        if self._cands is None or self._stale >= self.delay:
            self._refresh()
        self._stale += 1
        assert self._cands is not None
        slate = self.policy.select(
            self._with_pending() if self._stale > 1 and self.impute_pending else self._cands,
            n,
            self.rng,
            allowed_forums=allowed_forums,
            exclude=self._candidate_indices(exclude),
            per_forum_cap=per_forum_cap,
        )
        if self.impute_pending:
            self._pending_imps[slate.posts] += 1.0  # slate posts are distinct
            self._pending_clicks[slate.posts] += slate.alpha / (slate.alpha + slate.beta)
        return self._ids[slate.posts]

    def _with_pending(self) -> Candidates:
        """The snapshot plus the imputed outcomes of the decisions made since it."""
        cands = self._cands
        assert cands is not None
        return Candidates.unchecked(
            post_forum=cands.post_forum,
            post_impressions=cands.post_impressions + self._pending_imps,
            post_clicks=cands.post_clicks + self._pending_clicks,
            forum_impressions=cands.forum_impressions,
            forum_clicks=cands.forum_clicks,
            post_created_at=cands.post_created_at,
            post_counted_at=cands.post_counted_at,
            forum_counted_at=cands.forum_counted_at,
            as_of=cands.as_of,
        )

    def record(self, shown: IntArray, clicked: BoolArray) -> None:
        """Count one impression per seen post and the clicks (posts and forums), at the
        time of the last decision; with the policy's ``half_life``, as decayed counters."""
        if shown.shape[0] == 0:
            return
        self._count_forums(shown, clicked)
        np.add.at(self._raw_imps, shown, 1.0)
        if self.half_life is None:
            np.add.at(self._imps, shown, 1.0)
            np.add.at(self._clicks, shown, clicked)
            return
        events = (np.ones(shown.shape[0]), clicked.astype(np.float64))
        self._imps[shown], self._clicks[shown], self._counted_at[shown] = self._decayed(
            self._imps, self._clicks, self._counted_at, shown, events
        )

    def _count_forums(self, shown: IntArray, clicked: BoolArray) -> None:
        if self.forum_window is not None:
            fresh = self._raw_imps[shown] < self.forum_window
            shown, clicked = shown[fresh], clicked[fresh]  # forum counts: first N only
        if shown.shape[0] == 0:
            return
        if self.half_life is None:
            np.add.at(self._forum_imps, self._forum[shown], 1.0)
            np.add.at(self._forum_clicks, self._forum[shown], clicked.astype(np.float64))
            return
        n = self._forum_imps.shape[0]
        imps: FloatArray = np.bincount(self._forum[shown], minlength=n).astype(np.float64)
        clicks = np.bincount(self._forum[shown], clicked.astype(np.float64), n).astype(np.float64)
        forums = np.flatnonzero(imps)
        events = (imps[forums], clicks[forums])
        counters = (self._forum_imps, self._forum_clicks, self._forum_counted_at)
        self._forum_imps[forums], self._forum_clicks[forums], self._forum_counted_at[forums] = (
            self._decayed(*counters, forums, events)
        )

    def _decayed(
        self,
        imps: FloatArray,
        clicks: FloatArray,
        at: FloatArray,
        index: IntArray,
        events: tuple[FloatArray, FloatArray],
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Counters ``index`` (distinct) of (imps, clicks, at) after ``events`` (impressions,
        clicks per counter) at the time of the last decision (:func:`decayed_update`)."""
        assert self.half_life is not None
        add_imps, add_clicks = events
        new_imps, now = decayed_update(imps[index], at[index], self._now, self.half_life, add_imps)
        new_clicks, _ = decayed_update(
            clicks[index], at[index], self._now, self.half_life, add_clicks
        )
        return new_imps, np.minimum(new_clicks, new_imps), now

    def _refresh(self) -> None:
        ids = np.flatnonzero(self._alive)
        # Fresh copies of counters that record() keeps valid, so validation is skipped.
        self._cands = Candidates.unchecked(
            post_forum=self._forum[ids],
            post_impressions=self._imps[ids],
            post_clicks=self._clicks[ids],
            forum_impressions=self._forum_imps.copy(),
            forum_clicks=self._forum_clicks.copy(),
            post_created_at=self._created[ids],
            post_counted_at=self._counted_at[ids],
            forum_counted_at=self._forum_counted_at.copy(),
            as_of=float(self._now),
        )
        self._ids = ids
        self._cand_of = np.full(self._alive.shape[0], -1, np.intp)
        self._cand_of[ids] = np.arange(ids.shape[0])
        self._gone = np.zeros(0, np.intp)
        self._pending_imps = np.zeros(ids.shape[0])
        self._pending_clicks = np.zeros(ids.shape[0])
        self._stale = 0

    def _candidate_indices(self, exclude: IntArray | None) -> IntArray | None:
        """Candidate indices of ``exclude`` plus the posts expired since the refresh."""
        if exclude is None or exclude.shape[0] == 0:
            return self._gone if self._gone.shape[0] else None
        index = self._cand_of[exclude[exclude < self._cand_of.shape[0]]]
        return np.concatenate([index[index >= 0], self._gone])


class MabwiserTS:
    """MABWiser's Thompson sampling (Beta(1, 1) per arm) on a fixed set of arms.

    A peer library for benchmarks only: imported lazily, never by the service. Each
    recommendation is one ``predict()`` and, ``delay`` decisions later, the feedback is
    given to ``partial_fit`` in one batch (``delay=1``: one ``partial_fit`` per decision).
    """

    def __init__(self, n_arms: int, delay: int, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self._mab: Any = MAB(
            arms=list(range(n_arms)), learning_policy=LearningPolicy.ThompsonSampling(), seed=seed
        )
        self._mab.fit(decisions=np.zeros(0, np.intp), rewards=np.zeros(0))
        self.delay = delay
        self._decisions: list[int] = []
        self._rewards: list[int] = []

    def add_posts(
        self, ids: IntArray, forums: IntArray, created_at: IntArray | None = None
    ) -> None:
        """Arms are fixed at construction; only ids below ``n_arms`` are valid."""

    def expire_posts(self, ids: IntArray) -> None:
        """Arms never expire in the settings MABWiser is run on."""
        raise NotImplementedError("MabwiserTS does not support expiring arms")

    def recommend(
        self,
        n: int,
        *,
        allowed_forums: IntArray | None = None,
        exclude: IntArray | None = None,
        per_forum_cap: int | None = None,
    ) -> IntArray:
        """One ``predict()``: a single arm (only n = 1 with no filters is supported)."""
        if n != 1 or allowed_forums is not None or exclude is not None:
            raise NotImplementedError("MabwiserTS picks one arm, without filters")
        return np.array([self._mab.predict()], np.intp)

    def record(self, shown: IntArray, clicked: BoolArray) -> None:
        """Buffer the feedback; ``partial_fit`` every ``delay`` decisions."""
        self._decisions.extend(shown.tolist())
        self._rewards.extend(clicked.astype(int).tolist())
        if len(self._decisions) >= self.delay:
            self._mab.partial_fit(np.array(self._decisions), np.array(self._rewards))
            self._decisions, self._rewards = [], []
