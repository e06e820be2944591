"""The decision log: served slates (``P:{decisions:K}``, ``DECISION_SHARDS`` streams) and the
events that counted for them (``P:{f:F}:outcomes``, one stream per forum), append-only streams
capped by length (``XADD MAXLEN ~``).

They outlive the attribution window, so an export can join a slate with its final outcomes.
A decision is queued on the pipeline that serves its slate, as a command of its own (its
stream is outside the member's slot), on the stream of the member's shard
(:func:`~core.storage.keys.decision_shard`): a cluster spreads the streams over its masters.
Each stream is capped at its share of ``maxlen``, so the log keeps about ``maxlen`` decisions
while they spread over many members (one member's are capped at its shard's share), plus up
to a stream node (100 entries) per shard that approximate trimming leaves. The readers merge
the shards, and ``P:decisions`` (the one stream of earlier releases), in entry id order
(:meth:`DecisionLog.read_decisions`). An outcome is appended by the counting
step itself (``lua/apply_events.lua``), under the forum's tag: only events that count are
appended, exactly once each, so replaying events appends nothing and cannot push other
decisions' outcomes out of the capped stream, and no crash can count an event and lose its
outcome. ``P:outcomes:forums`` lists the forums whose stream may hold outcomes; the export
merges them (and ``P:outcomes``, the single stream of earlier releases, which held every
event, duplicates too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.typing import EncodableT

from core.storage.keys import DECISION_SHARDS, Keys, decision_shard
from core.storage.records import StreamEntry, text
from core.storage.scripts import batch

# The outcome stream keeps this many entries per decision kept: room for an impression and a
# click of every post of a ten-post slate.
OUTCOMES_PER_DECISION = 20


class DecisionLog:
    """``maxlen`` is how many decisions the log keeps (0: no log)."""

    def __init__(self, client: redis.Redis, keys: Keys, maxlen: int) -> None:
        self.client = client
        self.keys = keys
        self.maxlen = maxlen

    @property
    def shard_cap(self) -> int:
        """The length each decision stream shard is capped at: its share of ``maxlen``."""
        return -(-self.maxlen // DECISION_SHARDS)

    def queue_decision(
        self, pipe: redis.client.Pipeline, user_id: str, fields: Mapping[EncodableT, EncodableT]
    ) -> bool:
        """Queue the append of a decision about a slate served to ``user_id`` on ``pipe``;
        whether one was queued (the log is on)."""
        if self.maxlen:
            stream = self.keys.decisions(decision_shard(user_id))
            pipe.xadd(stream, dict(fields), maxlen=self.shard_cap, approximate=True)
        return bool(self.maxlen)

    @property
    def outcome_cap(self) -> int:
        """The length each forum's outcome stream is capped at (0: no log)."""
        return self.maxlen * OUTCOMES_PER_DECISION

    def queue_forums(self, pipe: redis.client.Pipeline, forum_ids: Sequence[str]) -> None:
        """Queue the note that the outcome streams of ``forum_ids`` (at least one) may hold
        outcomes: one command."""
        pipe.sadd(self.keys.outcome_forums, *forum_ids)

    def outcome_streams(self) -> list[str]:
        """The keys of every outcome stream that may hold entries."""
        forums: Any = self.client.smembers(self.keys.outcome_forums)
        by_forum = sorted(self.keys.forum_outcomes(str(text(f))) for f in forums)
        return [self.keys.outcomes, *by_forum]

    def kept(self) -> int:
        """How many decisions the log's streams hold now (every shard, and the stream of
        releases before them)."""
        pipe = batch(self.client)
        for stream in self.keys.decision_streams:
            pipe.xlen(stream)
        return sum(pipe.execute())

    def read_decisions(self, start: str, end: str, count: int) -> list[StreamEntry]:
        """Decision-log entries of every shard with ids in [start, end] (XRANGE syntax), in
        id order: see :meth:`read_merged` for ``count``."""
        return self.read_merged(self.keys.decision_streams, start, end, count)

    def read_merged(
        self, streams: list[str], start: str, end: str, count: int
    ) -> list[StreamEntry]:
        """The entries of ``streams`` with ids in [start, end] (XRANGE syntax), merged in
        id order, one round trip. A page holds every entry, of any stream, up to the
        ``count``-th smallest id (ties included, so a page may be a little longer): ids of
        different streams may be equal, and a reader that continues after the last id of a
        page must not skip the equal ones of another stream."""
        pipe = batch(self.client)
        for stream in streams:
            pipe.xrange(stream, start, end, count=count)
        found = [entry for raw in pipe.execute() for entry in _entries(raw)]
        found.sort(key=lambda entry: stream_id(entry[0]))
        if len(found) <= count:
            return found
        cutoff = stream_id(found[count - 1][0])
        return [entry for entry in found if stream_id(entry[0]) <= cutoff]

    def read_outcomes(self, stream: str, start: str, end: str, count: int) -> list[StreamEntry]:
        """Up to ``count`` entries of the outcome stream ``stream`` (from
        :meth:`outcome_streams`) with ids in [start, end] (XRANGE syntax)."""
        return _entries(self.client.xrange(stream, start, end, count=count))

    def outcomes_kept_since(self) -> float | None:
        """Unix time from which every outcome is kept: the newest of the oldest outcomes of
        the streams at their cap (older ones may have been trimmed away); None while no stream
        was trimmed."""
        streams = self.outcome_streams()
        pipe = batch(self.client)
        for stream in streams:
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", count=1)
        replies = pipe.execute()
        kept = [
            int(_entries(first)[0][0].split("-")[0]) / 1000.0
            for length, first in zip(replies[::2], replies[1::2], strict=True)
            if first and length >= self.outcome_cap
        ]
        return max(kept, default=None)


def stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), to compare ids of different streams."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def _entries(raw: Any) -> list[StreamEntry]:
    """XRANGE's reply as (id, fields) with text everywhere."""
    return [(str(text(i)), {str(text(k)): str(text(v)) for k, v in f.items()}) for i, f in raw]
