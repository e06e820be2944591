"""The decision log: served slates (``P:decisions``) and the events that counted for them
(``P:{f:F}:outcomes``, one stream per forum), append-only streams capped by length
(``XADD MAXLEN ~``).

They outlive the attribution window, so an export can join a slate with its final outcomes.
A decision is queued on the pipeline that serves its slate, as a command of its own (the
stream is a global key, outside the member's slot). An outcome is appended by the counting
step itself (``lua/apply_events.lua``), under the forum's tag: only events that count are
appended, exactly once each, so replaying events appends nothing and cannot push other
decisions' outcomes out of the capped stream, and no crash can count an event and lose its
outcome. ``P:outcomes:forums`` lists the forums whose stream may hold outcomes; the export
merges them (and ``P:outcomes``, the single stream of earlier releases, which held every
event, duplicates too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from redis.typing import EncodableT

from core.storage.keys import Keys
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

    def queue_decision(
        self, pipe: redis.client.Pipeline, fields: Mapping[EncodableT, EncodableT]
    ) -> bool:
        """Queue the append of a decision on ``pipe``; whether one was queued (the log is on)."""
        if self.maxlen:
            pipe.xadd(self.keys.decisions, dict(fields), maxlen=self.maxlen, approximate=True)
        return bool(self.maxlen)

    @property
    def outcome_cap(self) -> int:
        """The length each forum's outcome stream is capped at (0: no log)."""
        return self.maxlen * OUTCOMES_PER_DECISION

    def queue_forum(self, pipe: redis.client.Pipeline, forum_id: str) -> None:
        """Queue the note that ``forum_id``'s outcome stream may hold outcomes."""
        pipe.sadd(self.keys.outcome_forums, forum_id)

    def outcome_streams(self) -> list[str]:
        """The keys of every outcome stream that may hold entries."""
        forums: Any = self.client.smembers(self.keys.outcome_forums)
        by_forum = sorted(self.keys.forum_outcomes(str(text(f))) for f in forums)
        return [self.keys.outcomes, *by_forum]

    def queue_removal(self, pipe: redis.client.Pipeline, entry_id: bytes | str) -> None:
        """Queue the removal of a decision that was appended but not served after all."""
        pipe.xdel(self.keys.decisions, entry_id)

    def read_decisions(self, start: str, end: str, count: int) -> list[StreamEntry]:
        """Up to ``count`` decision-log entries with ids in [start, end] (XRANGE syntax)."""
        return _entries(self.client.xrange(self.keys.decisions, start, end, count=count))

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


def _entries(raw: Any) -> list[StreamEntry]:
    """XRANGE's reply as (id, fields) with text everywhere."""
    return [(str(text(i)), {str(text(k)): str(text(v)) for k, v in f.items()}) for i, f in raw]
