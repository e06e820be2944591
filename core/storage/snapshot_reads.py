"""What the web processes' snapshots read: each forum's posts that changed since a cursor, or
all its live posts, with their counts and the forum's counts as the policy takes them.

Every change of a post's counts or liveness is noted in its forum's change log
(``P:{f:F}:changes``) by the step that makes it, so a refresh reads only what changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from core.storage.catalogue import forum_ids
from core.storage.keys import Keys, policy_fields
from core.storage.records import ForumRead, PostStates, totals
from core.storage.scripts import batch

# How long the change log remembers a change; a snapshot that has not read it for half of
# this reloads in full.
CHANGES_KEEP_SECONDS = 600
# A reader's cursor lags the server's clock at its read by this much, so that changes noted
# after a small step back of that clock are read (again) rather than missed; the periodic full
# reload of the snapshot covers larger steps.
CHANGES_OVERLAP_US = 250_000

Changed = dict[str, tuple[float, list[tuple[bytes, float]], list[Any]]]


class SnapshotReads:
    """``forum_window`` picks the forum fields the policy takes (see core.storage.counting);
    ``keep_us``: how long the change log keeps a change (microseconds)."""

    changes_overlap_us = CHANGES_OVERLAP_US

    def __init__(self, client: redis.Redis, keys: Keys, forum_window: int, keep_us: int) -> None:
        self.client = client
        self.keys = keys
        self.policy_fields = policy_fields(forum_window)
        self.changes_keep_us = keep_us

    def read_changes(self, cursors: Mapping[str, float], now: float) -> list[ForumRead]:
        """Every forum's posts that changed after its cursor, with their current state.

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
        (seconds, micros), *replies = pipe.execute()
        read_at = seconds * 1_000_000 + micros - self.changes_overlap_us
        changed = {
            forum_id: (max(cursors[forum_id], read_at), log, counts)
            for forum_id, log, counts in zip(known, replies[0::2], replies[1::2], strict=True)
        }
        reads = self._changed_posts(changed)
        return reads + self.read_forums([f for f in every if f not in cursors], now)

    def _changed_posts(self, changed: Changed) -> list[ForumRead]:
        pipe = batch(self.client)
        for forum_id, (_, log, _) in changed.items():
            if log:
                posts: list[Any] = [post for post, _ in log]
                pipe.zmscore(self.keys.live(forum_id), posts)
                pipe.hmget(self.keys.stats(forum_id), _count_fields(posts))
        replies = iter(pipe.execute())
        reads = []
        for forum_id, (cursor, log, counts) in changed.items():
            states = None
            if log:
                states = _post_states([p for p, _ in log], next(replies), next(replies))
            reads.append(ForumRead(forum_id, cursor, totals(counts), states))
        return reads

    def read_forums(self, forum_ids: Sequence[str], now: float) -> list[ForumRead]:
        """The given forums in full: every live post's expiry and counts (two round trips)."""
        if not forum_ids:
            return []
        pipe = batch(self.client)
        pipe.time()  # first: changes after it come again from the next read_changes
        for forum_id in forum_ids:
            pipe.zrangebyscore(self.keys.live(forum_id), f"({now}", "+inf", withscores=True)
            pipe.hmget(self.keys.stats(forum_id), *self.policy_fields)
        (seconds, micros), *replies = pipe.execute()
        cursor = seconds * 1_000_000 + micros - self.changes_overlap_us
        lives, forum_counts = replies[0::2], replies[1::2]
        pipe = batch(self.client)
        for forum_id, live in zip(forum_ids, lives, strict=True):
            if live:
                pipe.hmget(self.keys.stats(forum_id), _count_fields([post for post, _ in live]))
        counts = iter(pipe.execute())
        reads = []
        for forum_id, live, forum in zip(forum_ids, lives, forum_counts, strict=True):
            states = _post_states(
                [p for p, _ in live], [e for _, e in live], next(counts) if live else []
            )
            reads.append(ForumRead(forum_id, cursor, totals(forum), states))
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


def _count_fields(posts: Sequence[bytes]) -> list[bytes]:
    """The stats hash fields of the posts: impressions and clicks, alternating."""
    fields = []
    for post in posts:
        fields += [b"i:" + post, b"c:" + post]
    return fields


def _post_states(
    post_ids: list[bytes], expires: Sequence[float | None], counts: list[Any]
) -> PostStates:
    return PostStates(
        post_ids=[p.decode() for p in post_ids],
        expires_at=[math.nan if e is None else float(e) for e in expires],
        impressions=[int(v or 0) for v in counts[0::2]],
        clicks=[int(v or 0) for v in counts[1::2]],
    )
