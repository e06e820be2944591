"""Reading decayed counters (core.storage.counting): each a value v and its time t, read as
the value at a time ``anchor``, ``v * 2 ** ((t - anchor) / h)``.

Counts read at one common time can be compared, summed and subtracted like exact counts, and
decayed further by one factor for all. A decayed click count can exceed its post's decayed
impressions (a click counts at its own time, its impression earlier and so at less weight):
whoever hands them to a policy caps clicks at impressions, after any sums (which stay exact).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core.storage.keys import decayed_policy_fields, policy_fields

# A counter read at an anchor gains at most 2 ** this (a time that far ahead is a wrong clock).
_MAX_GAIN = 60.0


@dataclass(frozen=True)
class CountFields:
    """The hash fields read as counts: a forum's as the policy takes them and each post's
    (impressions, clicks), exact; or with ``half_life`` (> 0) the decayed ones and their time,
    read as values at an anchor (see the module docstring)."""

    forum: tuple[str, ...]
    half_life: float = 0.0

    @classmethod
    def of(cls, forum_window: int, half_life: float) -> CountFields:
        if half_life > 0:
            return cls(decayed_policy_fields(forum_window), float(half_life))
        return cls(policy_fields(forum_window))

    @property
    def width(self) -> int:
        """Fields a post (or forum) reads: 2 exact, 3 decayed."""
        return len(self.forum)

    def posts(self, posts: Sequence[bytes], prefix: bytes = b"") -> list[bytes]:
        """Each post's fields, in the order of ``forum`` (``prefix``: a variant's ``V|``)."""
        names = (b"di:", b"dc:", b"dt:") if self.half_life else (b"i:", b"c:")
        return [prefix + name + post for post in posts for name in names]

    def counts(self, values: Sequence[Any], anchor: float) -> Iterator[tuple[float, float]]:
        """(impressions, clicks) of each group of :attr:`width` values (0 where absent)."""
        width = self.width
        for i in range(0, len(values), width):
            if not self.half_life:
                yield int(values[i] or 0), int(values[i + 1] or 0)
                continue
            last = float(values[i + 2] or anchor)
            gain = 2.0 ** min((last - anchor) / self.half_life, _MAX_GAIN)
            yield float(values[i] or 0) * gain, float(values[i + 1] or 0) * gain
