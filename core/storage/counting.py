"""Counting events into each forum's statistics, and forgetting long-expired posts.

Counts only ever change through ``lua/apply_events.lua``, which marks each event as seen and
increments the post and forum counters in one atomic step per forum (all its keys under the
forum's tag); a marker that is already present makes the event a no-op, so retries and
redelivered tasks never count twice. The same step notes the changed posts in the forum's
change log, which the snapshots read.

The windowed forum totals count each post over its first W impressions only (W is the forum
window, ``BANDIT_FORUM_WINDOW``): an impression counts in ``_wi`` when, counted, its post has
at most W impressions, and a click counts in ``_wc`` when its impression counted in ``_wi``.
Every post gets its first impressions whatever its CTR, so these totals estimate a typical
post of the forum, where ``_i``/``_c`` lean towards the posts the policy already favours; the
policy takes them as the forum's counts (:func:`core.storage.keys.policy_fields`). With W = 0
they are not written and the policy takes ``_i``/``_c``. A forum hash without them (written
before they existed, or while W was 0) reads as 0 impressions and 0 clicks: the forum's prior
is then the global one until impressions within the window are counted again (a post that
already had W impressions adds none). Changing W applies to the events counted from then on.

Posts whose attribution window closed after they expired or were withdrawn leave the forum's
live (or withdrawn) set and statistics (``lua/prune_expired.lua``, run by the workers every
minute), so those keys hold recent posts only; the forum totals, windowed ones too, keep their
counts. A forum left with no post is forgotten: it leaves ``P:forums:active``, which the
snapshots and pruning iterate, and its stats hash stays as history.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.typing import EncodableT

from core.storage.catalogue import forum_ids
from core.storage.decision_log import DecisionLog
from core.storage.keys import Keys
from core.storage.scripts import ScriptCall, Scripts, batch, run

Event = tuple[str, str, str]  # (request id, post id, forum id)


def apply_events_call(
    keys: Keys, kind: str, forum_id: str, events: Sequence[Event], ttl: int, keep_us: int,
    window: int, outcome_cap: int = 0,
) -> ScriptCall:  # fmt: skip
    """KEYS/ARGV of ``lua/apply_events.lua`` for the events of one forum (``forum_id``);
    ``outcome_cap`` is the cap of its outcome stream (0: no decision log)."""
    markers: dict[str, int] = {}
    pairs: list[EncodableT] = []
    for request_id, post_id, _ in events:
        pairs += [markers.setdefault(request_id, len(markers) + 1), post_id]
    event_keys = [keys.stats(forum_id), keys.changes(forum_id), keys.forum_outcomes(forum_id)]
    return ScriptCall(
        event_keys + [keys.seen(forum_id, r) for r in markers],
        [kind, ttl, keep_us, window, outcome_cap, *markers, *pairs],
    )


def prune_expired_call(keys: Keys, forum_id: str, before: float, limit: int) -> ScriptCall:
    """KEYS/ARGV of ``lua/prune_expired.lua`` for one forum."""
    forum_keys = [keys.live(forum_id), keys.stats(forum_id), keys.gone(forum_id),
                  keys.changes(forum_id)]  # fmt: skip
    return ScriptCall(forum_keys, [before, limit])


class Counting:
    """``forum_window`` is W of the windowed forum totals (0: none)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, log: DecisionLog,
        forum_window: int, keep_us: int,
    ) -> None:  # fmt: skip
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.log = log
        self.forum_window = forum_window
        self.keep_us = keep_us

    def apply_events(self, kind: str, events: Sequence[Event], ttl: int) -> list[int]:
        """Apply (request id, post id, forum id) events of ``kind`` ('i' or 'c'): one atomic
        step per forum, all in one round trip; seen-markers expire after ``ttl`` seconds.

        Returns per event 0 (already counted), 1 (counted) or 2 (a click that also counted
        its missing impression). With the decision log on, each event that counts, and only it,
        is appended to its forum's outcome stream in the same atomic step.
        """
        by_forum: dict[str, list[int]] = {}
        for i, (_, _, forum_id) in enumerate(events):
            by_forum.setdefault(forum_id, []).append(i)
        logged = self.log.outcome_cap > 0
        pipe = batch(self.client)
        if logged:  # before the steps, so that a forum's outcomes are always found
            for forum_id in by_forum:
                self.log.queue_forum(pipe, forum_id)
        for forum_id, indices in by_forum.items():
            call = apply_events_call(self.keys, kind, forum_id, [events[i] for i in indices],
                                     ttl, self.keep_us, self.forum_window,
                                     self.log.outcome_cap)  # fmt: skip
            run(self.scripts.apply_events, call, pipe)
        results = [0] * len(events)
        replies = pipe.execute()[len(by_forum) if logged else 0 :]
        for indices, applied in zip(by_forum.values(), replies, strict=True):
            for i, status in zip(indices, applied, strict=True):
                results[i] = int(status)
        return results

    def prune_expired(self, before: float, limit: int = 1000) -> int:
        """Forget posts that expired or were withdrawn before ``before`` (at most ``limit`` of
        each a forum): they leave their forum's live or withdrawn set and statistics,
        atomically per forum; then forget the forums left with no post. How many posts were
        forgotten.

        Without this, every post ever registered would stay in those keys for good.
        """
        forums = forum_ids(self.client, self.keys)
        pipe = batch(self.client)
        for forum_id in forums:
            run(self.scripts.prune_expired, prune_expired_call(self.keys, forum_id, before, limit),
                pipe)  # fmt: skip
        replies = pipe.execute()
        self._forget_forums([f for f, (_, idle) in zip(forums, replies, strict=True) if idle])
        return sum(int(pruned) for pruned, _ in replies)

    def _forget_forums(self, forums: Sequence[str]) -> None:
        """Take forums found with no post out of the active set, then put back any that a
        registration or withdrawal filled meanwhile (each adds its forum after its step, so
        either it adds it after this removal, or this check sees its post)."""
        if not forums:
            return
        self.client.zrem(self.keys.forums, *forums)
        pipe = batch(self.client)
        for forum_id in forums:
            pipe.exists(self.keys.live(forum_id), self.keys.gone(forum_id))
        back = {f: 0 for f, posts in zip(forums, pipe.execute(), strict=True) if posts}
        if back:
            self.client.zadd(self.keys.forums, back)
