"""Each variant's view of the statistics while an experiment runs, as arrays by catalogue row.

All variants start from the statistics learned before the experiment, and each then learns
from its own slates only: variant V's counts of a post (or forum) are the totals, minus what
every variant's slates added since the start (``*``), plus what V's added. So nothing is
copied when an experiment starts, and everyone is back on the totals when it stops (the
snapshot then reads no variant). The counts come from the same reads as the totals
(core.storage.snapshot_reads, one pipeline, not one atomic step): an event counted between
the two reads can put ``*`` briefly above the totals, so each view is clipped to valid counts
and is exact again at the next read. Decayed counts (``BANDIT_HALF_LIFE_SECONDS``) are read
as values at one common time, the catalogue's anchor, so the same sum is exact for them too
(core.storage.snapshot_reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bandits import Candidates
from core.storage.experiments import ServingState
from core.storage.records import VariantCounts
from core.storage.snapshot_reads import VariantRead


def variant_read(state: ServingState | None) -> VariantRead | None:
    """The variants whose counts a snapshot reads: the running experiment's, if any."""
    if state is None or state.experiment is None or state.definition is None:
        return None
    names = tuple(str(v["name"]) for v in state.definition.get("variants", ()))
    return VariantRead(state.experiment, names) if names else None


def count_times(anchor: float | None, n_posts: int, n_forums: int, as_of: float) -> dict[str, Any]:
    """The ``Candidates`` arguments that say when counts were counted: none for exact counts,
    else every count at ``anchor``, read at ``as_of`` (a policy with a half-life decays them by
    ``2 ** (-(as_of - anchor) / half_life)``)."""
    if anchor is None:
        return {}
    return {"post_counted_at": np.full(n_posts, anchor),
            "forum_counted_at": np.full(n_forums, anchor), "as_of": as_of}  # fmt: skip


class VariantArrays:
    """What the running experiment's variants (and ``*``) counted, by catalogue row and
    forum index; owned by the refresh thread, like the catalogue that holds it."""

    def __init__(self, read: VariantRead) -> None:
        self.read = read
        self.forum_counts: dict[str, list[tuple[float, float]]] = {n: [] for n in read.names}
        self.post_counts = {n: np.zeros((0, 2)) for n in read.names}

    def set_forum(self, forum: int, counts: Mapping[str, VariantCounts]) -> bool:
        """Take the forum's counts per variant; whether they changed."""
        changed = False
        for name in self.read.names:
            found = counts[name].policy_counts if name in counts else (0, 0)
            known = self.forum_counts[name]
            if forum == len(known):
                known.append(found)
                changed = True
            elif known[forum] != found:
                known[forum] = found
                changed = True
        return changed

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` rows (new rows start at 0)."""
        for name, counts in self.post_counts.items():
            if counts.shape[0] < capacity:
                grown = np.zeros((capacity, 2))
                grown[: counts.shape[0]] = counts
                self.post_counts[name] = grown

    def set_posts(
        self, rows: np.ndarray, kept: np.ndarray, counts: Mapping[str, VariantCounts]
    ) -> bool:
        """Take the counts of the read posts ``kept`` (a mask over the read) at ``rows``;
        whether they changed."""
        changed = False
        for name in self.read.names:
            if name not in counts:
                continue
            found = np.column_stack([counts[name].impressions, counts[name].clicks])
            found = found.astype(np.float64).reshape(-1, 2)[kept]
            changed |= not np.array_equal(self.post_counts[name][rows], found)
            self.post_counts[name][rows] = found
        return changed

    def candidates(self, base: Candidates, rows: np.ndarray) -> dict[str, Candidates]:
        """Each variant's candidates: ``base`` (the totals of the candidate ``rows``) with the
        other variants' counts taken out."""
        every = self.post_counts["*"][rows]
        every_forum = _forums(self.forum_counts["*"])
        views = {}
        for name in self.read.variants:
            posts = valid(np.column_stack([base.post_impressions, base.post_clicks])
                           - every + self.post_counts[name][rows])  # fmt: skip
            forums = valid(np.column_stack([base.forum_impressions, base.forum_clicks])
                            - every_forum + _forums(self.forum_counts[name]))  # fmt: skip
            views[name] = Candidates(
                post_forum=base.post_forum, post_impressions=posts[:, 0],
                post_clicks=posts[:, 1], forum_impressions=forums[:, 0],
                forum_clicks=forums[:, 1], post_created_at=base.post_created_at,
                post_counted_at=base.post_counted_at, forum_counted_at=base.forum_counted_at,
                as_of=base.as_of,
            )  # fmt: skip
        return views


def _forums(counts: list[tuple[float, float]]) -> np.ndarray:
    return np.array(counts, dtype=np.float64).reshape(-1, 2)


def valid(counts: np.ndarray) -> np.ndarray:
    """(impressions, clicks) rows as floats clipped to 0 <= clicks <= impressions (decayed
    clicks may exceed impressions, core.storage.decayed); shape (n, 2), also for n = 0."""
    counts = np.asarray(counts, np.float64).reshape(-1, 2)
    impressions = np.maximum(counts[:, 0], 0.0)
    return np.column_stack([impressions, np.clip(counts[:, 1], 0.0, impressions)])
