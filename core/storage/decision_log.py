"""The decision log: served slates (``P:decisions``) and their attributable events
(``P:outcomes``), append-only streams capped by length (``XADD MAXLEN ~``).

They outlive the attribution window, so an export can join a slate with its final outcomes.
Entries are queued on the pipeline of the step they record (serving a slate, applying events),
as commands of their own: the streams are global keys, outside the slot of that step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.typing import EncodableT

from core.storage.keys import Keys
from core.storage.records import StreamEntry, text

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

    def queue_outcomes(
        self, pipe: redis.client.Pipeline, kind: str, events: Sequence[tuple[str, str, str]]
    ) -> int:
        """Queue the append of (request id, post id, forum id) events of ``kind``; how many
        commands were queued. A replay appends them again: readers treat the stream as a set."""
        if not self.maxlen:
            return 0
        maxlen = self.maxlen * OUTCOMES_PER_DECISION
        for request_id, post_id, _ in events:
            pipe.xadd(self.keys.outcomes, {"r": request_id, "p": post_id, "k": kind},
                      maxlen=maxlen)  # fmt: skip
        return len(events)

    def queue_removal(self, pipe: redis.client.Pipeline, entry_id: bytes | str) -> None:
        """Queue the removal of a decision that was appended but not served after all."""
        pipe.xdel(self.keys.decisions, entry_id)

    def read_decisions(self, start: str, end: str, count: int) -> list[StreamEntry]:
        """Up to ``count`` decision-log entries with ids in [start, end] (XRANGE syntax)."""
        return _entries(self.client.xrange(self.keys.decisions, start, end, count=count))

    def read_outcomes(self, start: str, end: str, count: int) -> list[StreamEntry]:
        """Up to ``count`` outcome-stream entries with ids in [start, end] (XRANGE syntax)."""
        return _entries(self.client.xrange(self.keys.outcomes, start, end, count=count))

    def outcomes_kept_since(self) -> float | None:
        """Unix time of the oldest outcome kept once the outcome stream is at its cap (older
        ones may have been trimmed away); None while nothing was trimmed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.keys.outcomes)
        pipe.xrange(self.keys.outcomes, "-", "+", count=1)
        length, first = pipe.execute()
        if not first or length < self.maxlen * OUTCOMES_PER_DECISION:
            return None
        return int(_entries(first)[0][0].split("-")[0]) / 1000.0


def _entries(raw: Any) -> list[StreamEntry]:
    """XRANGE's reply as (id, fields) with text everywhere."""
    return [(str(text(i)), {str(text(k)): str(text(v)) for k, v in f.items()}) for i, f in raw]
