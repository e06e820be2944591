"""The statistics snapshot that the request path reads (app.snapshot loads it), and the draw
of a slate from it.

Each candidate set that a snapshot serves (the totals, or each variant's while an experiment
runs, app.variant_arrays) carries, from 4,000 candidates on, a pruned Thompson draw built on
the refresh thread (:mod:`app.samplers`, :class:`bandits.topn.TopNSampler`), so a request draws
only the posts that can enter its slate instead of one Beta sample per candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.plans import Arm, Plan
from bandits import Candidates, Slate, TopNSampler

_NO_POSTS = np.zeros(0, np.intp)


@dataclass(frozen=True)
class Snapshot:
    """Candidates and their statistics as of ``built_at`` (unix seconds, when the read began).

    Candidate ``i`` is row ``rows[i]`` of the catalogue's append-only ``post_ids``;
    ``candidate_of_row`` maps back (-1: not a candidate). ``post_index`` and ``forum_index``
    are shared with the refresh thread, which only adds to them, so lookups are bounded by
    this snapshot's sizes.
    """

    built_at: float
    forum_ids: list[str]
    forum_index: dict[str, int]
    post_ids: list[str]
    post_index: dict[str, int]
    rows: np.ndarray
    candidate_of_row: np.ndarray
    expires_at: np.ndarray
    next_expiry: float
    candidates: Candidates
    plan: Plan | None = None  # None: read from the snapshot file, the configured policy serves
    # While an experiment runs: each variant's candidates, learnt from its own slates only.
    variant_candidates: Mapping[str, Candidates] = field(default_factory=dict)
    # The pruned draw of each serving arm's candidates, by variant (None: the default arm);
    # only for arms it serves (app.samplers), the others draw with their policy.
    samplers: Mapping[str | None, TopNSampler] = field(default_factory=dict)

    def candidates_of(self, variant: str | None) -> Candidates:
        """The candidates as ``variant`` of the running experiment sees them (app.variant_arrays);
        the totals outside an experiment."""
        if variant is None:
            return self.candidates
        return self.variant_candidates.get(variant, self.candidates)

    def select(
        self,
        arm: Arm,
        n: int,
        rng: np.random.Generator,
        *,
        allowed_forums: npt.ArrayLike | None = None,
        exclude: npt.ArrayLike | None = None,
        per_forum_cap: int | None = None,
    ) -> Slate:
        """``arm.policy.select`` on the arm's candidates (:meth:`candidates_of`): through the
        sampler built for that arm at refresh when there is one (the same slate distribution
        up to ``app.samplers.DELTA`` in total variation), else the policy's full draw.

        Raises:
            ValueError: as :meth:`Policy.select <bandits.policies.Policy.select>`.
        """
        sampler = self.samplers.get(arm.variant)
        if sampler is not None and sampler.policy is arm.policy:
            return sampler.select(
                n, rng, allowed_forums=allowed_forums, exclude=exclude, per_forum_cap=per_forum_cap
            )
        return arm.policy.select(
            self.candidates_of(arm.variant), n, rng, allowed_forums=allowed_forums,
            exclude=exclude, per_forum_cap=per_forum_cap,
        )  # fmt: skip

    @property
    def size(self) -> int:
        return self.candidates.n_posts

    @property
    def live_forums(self) -> int:
        """Forums with at least one post in the snapshot."""
        return int(np.count_nonzero(self.candidates.forum_post_counts))

    def items(self, candidates: np.ndarray) -> list[tuple[str, str]]:
        """(post id, forum id) of each of the candidates."""
        rows = self.rows[candidates].tolist()
        forums = self.candidates.post_forum[candidates].tolist()
        post_ids, forum_ids = self.post_ids, self.forum_ids
        return [(post_ids[r], forum_ids[f]) for r, f in zip(rows, forums, strict=True)]

    def forum_indices(self, forum_ids: Iterable[str]) -> np.ndarray:
        """Indices of the given forums that the snapshot knows (others are ignored)."""
        n_forums = self.candidates.n_forums
        found = [self.forum_index.get(f, n_forums) for f in forum_ids]
        return np.array([i for i in found if i < n_forums], dtype=np.intp)

    def excluded(self, post_ids: Iterable[str], now: float) -> np.ndarray | None:
        """Candidate indices of ``post_ids`` and of candidates expired by ``now``; None if none."""
        n_rows = self.candidate_of_row.shape[0]
        rows = [r for r in map(self.post_index.get, post_ids) if r is not None and r < n_rows]
        listed = self.candidate_of_row[rows] if rows else _NO_POSTS
        listed = listed[listed >= 0]
        if now >= self.next_expiry:
            listed = np.concatenate([listed, np.flatnonzero(self.expires_at <= now)])
        return listed if listed.size else None
