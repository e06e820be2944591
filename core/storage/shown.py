"""What the seen-limit remembers: each member's impressions, and their clicks.

A post shown to a member ``BANDIT_SEEN_LIMIT`` times within ``BANDIT_SEEN_SECONDS`` without a
click is not recommended to that member again in that window. The workers record, under the
member's tag (``P:{u:T}:shown:U``, the slot of the member's served slates), one entry per
impression they apply, ``<post>#<request id>`` scored by when its slate was served (the time
inside the request id), and one entry per clicked post, ``<post>`` scored by when its latest
click was accepted. The serve step (``lua/serve_slate.lua``) counts, per post, the impressions
of slates served within the window and after the member's last click on it.

Exactly once without markers: an impression's entry is named by its request and post and
scored by its request's time, so a duplicate, a replay or a retried task writes the very same
entry again; it never counts twice. The workers therefore record every attributable impression,
duplicates included, after the counting step: a worker that dies between the two steps costs
nothing once its task runs again (until then the member may be shown the post once more).

A click lifts the limit: the impressions served before the member's last click on a post no
longer count, and the ones served after it count from zero (meanwhile the clicked check hides
the post for ``BANDIT_RECLICK_SECONDS``). An impression applied after the click but served
before it does not count either: it is compared by when it was served.

Bounded memory: every write drops the entries older than the window and keeps the newest
:data:`SHOWN_KEEP`, and the key expires ``BANDIT_SEEN_SECONDS`` after its last write. A
member shown more than that within the window has their oldest impressions forgotten (a post
then counts only its recent impressions); a dropped click entry is older than every entry
kept, so no impression that it reset comes back.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from core.storage.keys import Keys
from core.storage.request_ids import request_time
from core.storage.scripts import batch

#: Entries kept per member: about 25 visits of 10-post slates, read in full by each checked
#: serve (see ``lua/serve_slate.lua``).
SHOWN_KEEP = 256

# The separator of an impression's entry: not a character a post id may hold.
ENTRY_SEPARATOR = "#"


def impression_entry(post_id: str, request_id: str) -> str:
    return f"{post_id}{ENTRY_SEPARATOR}{request_id}"


class Shown:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def remember_impressions(
        self, impressions: Sequence[tuple[str, str, str]], now: float, seconds: int
    ) -> None:
        """Record (user id, post id, request id) impressions, each once however often it is
        recorded, for a window of ``seconds``.

        Raises:
            ValueError: a request id was not issued by the server.
        """
        entries: dict[str, dict[str, float]] = {}
        for user_id, post_id, request_id in impressions:
            served_at = request_time(request_id)
            if served_at is None:
                raise ValueError(f"not a request id issued by the server: {request_id!r}")
            entries.setdefault(user_id, {})[impression_entry(post_id, request_id)] = served_at
        self._write(entries, now, seconds, latest=False)

    def remember_clicks(
        self, clicks: Sequence[tuple[str, str]], accepted_at: float, now: float, seconds: int
    ) -> None:
        """Record (user id, post id) clicks accepted at ``accepted_at``: the posts' earlier
        impressions no longer count (an earlier click's time is moved forward, never back)."""
        entries: dict[str, dict[str, float]] = {}
        for user_id, post_id in clicks:
            entries.setdefault(user_id, {})[post_id] = accepted_at
        self._write(entries, now, seconds, latest=True)

    def _write(
        self, entries: dict[str, dict[str, float]], now: float, seconds: int, latest: bool
    ) -> None:
        """Add the entries of each member, then trim their key to the window and the cap and
        set its TTL (one round trip)."""
        if not entries:
            return
        pipe = batch(self.client)
        for user_id, members in entries.items():
            key = self.keys.shown(user_id)
            pipe.zadd(key, members, gt=latest)
            pipe.zremrangebyscore(key, "-inf", f"({now - seconds}")
            pipe.zremrangebyrank(key, 0, -SHOWN_KEEP - 1)
            pipe.expire(key, seconds)
        pipe.execute()
