"""What the simulated forum remembers about each member: the posts they clicked, how often
each post was shown to them, and the seen-limit that keeps a homepage from repeating itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandits.candidates import IntArray
from bandits.simulate.recommenders import BoolArray

CountArray = npt.NDArray[np.uint16]

#: Default window of the seen-limit, in visits (about ten visits of one member in the
#: default world of 1,000 members).
SEEN_WINDOW = 10_000

#: Slates are counted by the largest number of earlier impressions of any of their posts,
#: up to this many (the last bin holds this many or more).
REPEAT_BINS = 16


@dataclass(frozen=True)
class SeenLimit:
    """A post shown ``limit`` times to a member without a click is not recommended to that
    member again until ``window`` visits after the first of those impressions (0: off).

    The window is fixed, starting at the first impression after the previous window ended,
    as a counter with a time-to-live would be.

    Raises:
        ValueError: if ``limit`` < 0 or ``window`` < 1.
    """

    limit: int = 0
    window: int = SEEN_WINDOW

    def __post_init__(self) -> None:
        if self.limit < 0 or self.window < 1:
            raise ValueError(f"seen limit must be >= 0 and window >= 1, got {self}")


class MemberHistory:
    """Per member and post: clicks, impressions, and the seen-limit window's counts.

    Impressions are a dense members x posts array (uint16: a member is shown a post far
    fewer than 65,535 times), so a visit reads its member's row in one slice.
    """

    def __init__(self, members: int, posts: int, seen: SeenLimit) -> None:
        self.seen = seen
        self.read: list[list[int]] = [[] for _ in range(members)]
        self.shown = np.zeros((members, posts), np.uint16)
        self.repeats = np.zeros(REPEAT_BINS, np.int64)
        shape = (members, posts) if seen.limit else (0, 0)
        self._count = np.zeros(shape, np.uint16)
        self._since = np.zeros(shape, np.int64)

    def clicked(self, member: int, lo: int) -> IntArray:
        """Live posts (ids >= ``lo``) the member has clicked: never shown to them again."""
        return np.array([p for p in self.read[member] if p >= lo], np.intp)

    def over_limit(self, member: int, live: tuple[int, int], t: int) -> IntArray:
        """Live posts the seen-limit withholds from the member at visit ``t``."""
        if not self.seen.limit:
            return np.zeros(0, np.intp)
        lo, hi = live
        full = self._count[member, lo:hi] >= self.seen.limit
        full &= t - self._since[member, lo:hi] < self.seen.window
        return np.flatnonzero(full) + lo

    def record(self, member: int, t: int, slate: IntArray, seen: BoolArray) -> None:
        """Count the slate's repeats, then the impressions (the seen posts) of visit ``t``."""
        if slate.shape[0]:
            before = int(self.shown[member, slate].max())
            self.repeats[min(before, REPEAT_BINS - 1)] += 1
        posts = slate[seen]
        self.shown[member, posts] += 1
        if self.seen.limit and posts.shape[0]:
            expired = t - self._since[member, posts] >= self.seen.window
            restart = posts[expired | (self._count[member, posts] == 0)]
            self._count[member, restart] = 0
            self._since[member, restart] = t
            self._count[member, posts] += 1

    def click(self, member: int, posts: IntArray) -> None:
        """The member clicked ``posts``."""
        self.read[member].extend(posts.tolist())
