"""What the web processes' snapshots read: each forum's posts that changed since a cursor, or
all its live posts, with their counts and the forum's counts as the policy takes them; while
an experiment runs, the same counts per variant of its slates (``P:{f:F}:vstats:X``).

Every change of a post's counts or liveness is noted in its forum's change log
(``P:{f:F}:changes``) by the step that makes it, so a refresh reads only what changed.

With a half-life (``BANDIT_HALF_LIFE_SECONDS``) the reads take the decayed counters instead
(core.storage.counting), each a value and its time, and return them as values at one time,
the reader's ``anchor``: a counter (v, t) reads as ``v * 2 ** ((t - anchor) / h)``. Counts
at one common time can be compared, summed and subtracted like exact counts (the variants'
"totals - all variants + own" stays exact), change only when an event changes them, and
the reader decays them all by one factor ``2 ** (-(now - anchor) / h)`` to its time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from core.storage.catalogue import forum_ids
from core.storage.decayed import CountFields
from core.storage.keys import ALL_VARIANTS, Keys
from core.storage.records import ForumRead, PostStates, VariantCounts
from core.storage.scripts import batch

# How long the change log remembers a change; a snapshot that has not read it for half of
# this reloads in full.
CHANGES_KEEP_SECONDS = 600
# A reader's cursor lags the server's clock at its read by this much, so that changes noted
# after a small step back of that clock are read (again) rather than missed; the periodic full
# reload of the snapshot covers larger steps.
CHANGES_OVERLAP_US = 250_000

Changed = dict[str, tuple[float, list[tuple[bytes, float]], list[Any], list[Any]]]


@dataclass(frozen=True)
class VariantRead:
    """The running experiment whose variants' counts a snapshot reads: its id and variants
    (``*``, all of them together, is read too)."""

    experiment: str
    variants: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.variants, ALL_VARIANTS)


class SnapshotReads:
    """``forum_window`` picks the forum fields the policy takes (see core.storage.counting);
    ``keep_us``: how long the change log keeps a change (microseconds); with ``half_life``
    (seconds, > 0) the counts read are the decayed ones, at the ``anchor`` of each read."""

    changes_overlap_us = CHANGES_OVERLAP_US

    def __init__(
        self, client: redis.Redis, keys: Keys, forum_window: int, keep_us: int,
        half_life: float = 0,
    ) -> None:  # fmt: skip
        self.client = client
        self.keys = keys
        self.fields = CountFields.of(forum_window, half_life)
        self.policy_fields = self.fields.forum
        self.changes_keep_us = keep_us

    @property
    def half_life(self) -> float:
        """The half-life of the counts read, in seconds (0: exact counts)."""
        return self.fields.half_life

    def read_changes(
        self, cursors: Mapping[str, float], now: float, experiment: VariantRead | None = None,
        anchor: float = 0.0,
    ) -> list[ForumRead]:  # fmt: skip
        """Every forum's posts that changed after its cursor, with their current state (and,
        with ``experiment``, its variants' counts of them); decayed counts at ``anchor``.

        A forum missing from ``cursors`` is read in full (its live posts). Two round trips,
        plus two when new forums appear. The returned cursors lag the server's clock at the
        read by ``changes_overlap_us``: a change noted in the same microsecond, or after a
        small step back of the clock, is read (again) next time rather than missed.
        """
        every = forum_ids(self.client, self.keys)
        known = [f for f in every if f in cursors]
        pipe = batch(self.client)
        pipe.time()
        for forum_id in known:
            pipe.zrangebyscore(self.keys.changes(forum_id), f"({cursors[forum_id]:.0f}", "+inf",
                               withscores=True)  # fmt: skip
            pipe.hmget(self.keys.stats(forum_id), *self.policy_fields)
            self._queue_variant_forum(pipe, forum_id, experiment)
        (seconds, micros), *replies = pipe.execute()
        read_at = seconds * 1_000_000 + micros - self.changes_overlap_us
        changed: Changed = {}
        for i, forum_id in enumerate(known):
            log, counts, variant_counts = replies[3 * i : 3 * i + 3]
            changed[forum_id] = (max(cursors[forum_id], read_at), log, counts, variant_counts)
        reads = self._changed_posts(changed, experiment, anchor)
        fresh = [f for f in every if f not in cursors]
        return reads + self.read_forums(fresh, now, experiment, anchor)

    def _queue_variant_forum(
        self, pipe: redis.client.Pipeline, forum_id: str, experiment: VariantRead | None
    ) -> None:
        """Queue the read of the variants' forum counts (without an experiment a placeholder in
        the forum's slot, whose reply is ignored: cluster pipelines refuse keyless commands)."""
        if experiment is None:
            pipe.exists(self.keys.stats(forum_id))
            return
        fields = [f"{n}|{f}" for n in experiment.names for f in self.policy_fields]
        pipe.hmget(self.keys.variant_stats(forum_id, experiment.experiment), fields)

    def _changed_posts(
        self, changed: Changed, experiment: VariantRead | None, anchor: float
    ) -> list[ForumRead]:
        pipe = batch(self.client)
        for forum_id, (_, log, _, _) in changed.items():
            if log:
                posts: list[Any] = [post for post, _ in log]
                pipe.zmscore(self.keys.live(forum_id), posts)
                pipe.hmget(self.keys.stats(forum_id), self.fields.posts(posts))
                self._queue_variant_posts(pipe, forum_id, posts, experiment)
        replies = iter(pipe.execute())
        reads = []
        for forum_id, (cursor, log, counts, variant_counts) in changed.items():
            states, post_counts = None, None
            if log:
                post_ids, live = [p for p, _ in log], next(replies)
                states = self._post_states(post_ids, live, next(replies), anchor)
                post_counts = next(replies)
            variants = self._variants(experiment, variant_counts, post_counts, anchor)
            forum = next(self.fields.counts(counts, anchor))
            reads.append(ForumRead(forum_id, cursor, forum, states, variants))
        return reads

    def _queue_variant_posts(
        self, pipe: redis.client.Pipeline, forum_id: str, posts: Sequence[bytes],
        experiment: VariantRead | None,
    ) -> None:  # fmt: skip
        """Queue the read of the variants' counts of ``posts`` (without an experiment the same
        placeholder as :meth:`_queue_variant_forum`)."""
        if experiment is None:
            pipe.exists(self.keys.stats(forum_id))
            return
        fields = [f for n in experiment.names for f in self.fields.posts(posts, n.encode() + b"|")]
        pipe.hmget(self.keys.variant_stats(forum_id, experiment.experiment), fields)

    def read_forums(
        self, forum_ids: Sequence[str], now: float, experiment: VariantRead | None = None,
        anchor: float = 0.0,
    ) -> list[ForumRead]:  # fmt: skip
        """The given forums in full: every live post's expiry and counts, and with
        ``experiment`` its variants' (two round trips); decayed counts at ``anchor``."""
        if not forum_ids:
            return []
        pipe = batch(self.client)
        pipe.time()  # first: changes after it come again from the next read_changes
        for forum_id in forum_ids:
            pipe.zrangebyscore(self.keys.live(forum_id), f"({now}", "+inf", withscores=True)
            pipe.hmget(self.keys.stats(forum_id), *self.policy_fields)
            self._queue_variant_forum(pipe, forum_id, experiment)
        (seconds, micros), *replies = pipe.execute()
        cursor = seconds * 1_000_000 + micros - self.changes_overlap_us
        lives, forum_counts, variant_forums = replies[0::3], replies[1::3], replies[2::3]
        pipe = batch(self.client)
        for forum_id, live in zip(forum_ids, lives, strict=True):
            if live:
                posts = [post for post, _ in live]
                pipe.hmget(self.keys.stats(forum_id), self.fields.posts(posts))
                self._queue_variant_posts(pipe, forum_id, posts, experiment)
        counts = iter(pipe.execute())
        reads = []
        for forum_id, live, forum, variant_forum in zip(
            forum_ids, lives, forum_counts, variant_forums, strict=True
        ):
            states = self._post_states(
                [p for p, _ in live], [e for _, e in live], next(counts) if live else [], anchor
            )
            variants = self._variants(experiment, variant_forum, next(counts) if live else [],
                                      anchor)  # fmt: skip
            policy_counts = next(self.fields.counts(forum, anchor))
            reads.append(ForumRead(forum_id, cursor, policy_counts, states, variants))
        return reads

    def created_at(self, posts: Sequence[tuple[str, str]]) -> list[float]:
        """Each (post, forum)'s creation time from its metadata, 0 where it has none (one round
        trip, one command a post: the snapshot asks only for posts it has no row for yet)."""
        if not posts:
            return []
        pipe = batch(self.client)
        for post_id, forum_id in posts:
            pipe.hget(self.keys.post(forum_id, post_id), "created_at")
        return [float(value or 0) for value in pipe.execute()]

    def _variants(
        self, experiment: VariantRead | None, forum: list[Any], posts: list[Any] | None,
        anchor: float,
    ) -> dict[str, VariantCounts]:  # fmt: skip
        """Each variant's counts from the replies of the two reads queued above."""
        if experiment is None:
            return {}
        width = self.fields.width
        found, per_name = {}, len(posts or []) // len(experiment.names)
        for i, name in enumerate(experiment.names):
            mine = list(
                self.fields.counts((posts or [])[i * per_name : (i + 1) * per_name], anchor)
            )
            found[name] = VariantCounts(
                next(self.fields.counts(forum[width * i : width * (i + 1)], anchor)),
                [imps for imps, _ in mine], [clicks for _, clicks in mine],
            )  # fmt: skip
        return found

    def _post_states(
        self, post_ids: list[bytes], expires: Sequence[float | None], counts: list[Any],
        anchor: float,
    ) -> PostStates:  # fmt: skip
        found = list(self.fields.counts(counts, anchor))
        return PostStates(
            post_ids=[p.decode() for p in post_ids],
            expires_at=[math.nan if e is None else float(e) for e in expires],
            impressions=[imps for imps, _ in found],
            clicks=[clicks for _, clicks in found],
        )
