"""What the seen-limit remembers: each member's impressions and clicks, and the posts at it.

A post shown to a member ``BANDIT_SEEN_LIMIT`` times within ``BANDIT_SEEN_SECONDS`` without a
click is not recommended to that member again in that window. The workers record, under the
member's tag (the slot of the member's served slates), one entry per impression they apply,
``<post>#<request>`` (:func:`impression_entry`) scored by when its slate was served (the
time inside the request id), and one entry per clicked post, ``<post>`` scored by when its
latest click was accepted (``P:{u:T}:shown:U``). The same step (``lua/record_shown.lua``)
counts again each post whose entries changed, its impressions served within the window and
after the member's last click on it, and keeps the posts at the limit with the time until
which they stay there (``P:{u:T}:limited:U``). The serve step reads only those, one
``ZSCORE`` per post of the slate, as it reads the member's clicks: the request path does not
grow with a member's history.

Exactly once without markers: an impression's entry is named by its request and post and
scored by its request's time, so a duplicate, a replay or a retried task writes the very same
entry again, and counting again finds the same posts at the limit: it never counts twice. The
workers therefore record every attributable impression, duplicates included, after the
counting step: a worker that dies between the two steps costs nothing once its task runs again
(until then the member may be shown the post once more).

A click lifts the limit: the impressions served before the member's last click on a post no
longer count, and the ones served after it count from zero (meanwhile the clicked check hides
the post for ``BANDIT_RECLICK_SECONDS``). An impression applied after the click but served
before it does not count either: it is compared by when it was served.

Bounded memory: every write drops the entries older than the window and keeps the newest
:data:`SHOWN_KEEP`, and both keys expire ``BANDIT_SEEN_SECONDS`` after their last write. A
member shown more than that within the window has their oldest impressions forgotten (a post
then counts only its recent impressions); a dropped click entry is older than every entry
kept, so no impression that it reset comes back. The limit is the one configured when a
post's entries last changed: a new ``BANDIT_SEEN_LIMIT`` applies to the posts recorded from
then on.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.typing import EncodableT

from core.storage.keys import Keys
from core.storage.request_ids import request_time
from core.storage.scripts import ScriptCall, Scripts, batch, run

#: Entries kept per member: about a dozen visits of 10-post slates, and what Redis stores in
#: its compact encoding by default (``zset-max-listpack-entries`` 128; under 10 kB a member).
SHOWN_KEEP = 128

# The separator of an impression's entry: not a character a post id may hold.
ENTRY_SEPARATOR = "#"


def impression_entry(post_id: str, request_id: str) -> str:
    """``<post>#<the random part of the request id>``: with the member (the key) it names the
    request, and it keeps a member's entries within Redis's compact encoding (64 bytes) for
    post ids up to 51 characters. Two of the member's requests with the same 48 random bits
    would count as one impression."""
    return f"{post_id}{ENTRY_SEPARATOR}{request_id[16:]}"


def record_shown_call(
    keys: Keys, user_id: str, kind: str, entries: dict[str, float], now: float,
    limit: tuple[int, int], reclick: int | None = None,
) -> ScriptCall:  # fmt: skip
    """KEYS/ARGV of ``lua/record_shown.lua`` for one member: ``kind`` 'i' (entries
    impression entry -> served at) or 'c' (post -> click accepted at); ``limit`` is (window
    seconds, the seen-limit); ``reclick`` ('c' only) the re-click window, when the same step
    is to note the clicked posts for it (None: not)."""
    seconds, seen_limit = limit
    noted = kind == "c" and reclick is not None
    args: list[EncodableT] = [now, seconds, seen_limit, SHOWN_KEEP, kind,
                              reclick if noted and reclick is not None else ""]  # fmt: skip
    for entry, at in entries.items():
        args += [entry, at]
    member_keys = [keys.shown(user_id), keys.limited(user_id)]
    return ScriptCall(member_keys + [keys.clicked(user_id)] * noted, args)


class Shown:
    """``limit`` is (``BANDIT_SEEN_SECONDS``, ``BANDIT_SEEN_LIMIT``), the limit at least 1."""

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def remember_impressions(
        self, impressions: Sequence[tuple[str, str, str]], now: float, limit: tuple[int, int]
    ) -> None:
        """Record (user id, post id, request id) impressions, each once however often it is
        recorded.

        Raises:
            ValueError: a request id was not issued by the server.
        """
        entries: dict[str, dict[str, float]] = {}
        for user_id, post_id, request_id in impressions:
            served_at = request_time(request_id)
            if served_at is None:
                raise ValueError(f"not a request id issued by the server: {request_id!r}")
            entries.setdefault(user_id, {})[impression_entry(post_id, request_id)] = served_at
        self._record("i", entries, now, limit)

    def remember_clicks(
        self, clicks: Sequence[tuple[str, str]], accepted_at: float, now: float,
        limit: tuple[int, int], reclick: int | None = None,
    ) -> None:  # fmt: skip
        """Record (user id, post id) clicks accepted at ``accepted_at``: the posts' earlier
        impressions no longer count (an earlier click's time is moved forward, never back).
        With ``reclick``, the same step also notes them as
        :meth:`~core.storage.serving.Serving.remember_clicks` does (at ``now``, for
        ``reclick`` seconds)."""
        entries: dict[str, dict[str, float]] = {}
        for user_id, post_id in clicks:
            entries.setdefault(user_id, {})[post_id] = accepted_at
        self._record("c", entries, now, limit, reclick)

    def _record(
        self, kind: str, entries: dict[str, dict[str, float]], now: float,
        limit: tuple[int, int], reclick: int | None = None,
    ) -> None:  # fmt: skip
        """One step per member, all in one round trip."""
        if not entries:
            return
        pipe = batch(self.client)
        for user_id, members in entries.items():
            call = record_shown_call(self.keys, user_id, kind, members, now, limit, reclick)
            run(self.scripts.record_shown, call, pipe)
        pipe.execute()
