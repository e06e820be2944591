"""The catalogue: posts (metadata, liveness in their forum), forums, and withdrawals.

Every transition of a post (register, update, withdraw) is one Lua step in its forum's hash
slot (``lua/put_post.lua``, ``lua/withdraw_post.lua``): the post's metadata lives under its
forum's tag, so the step checks it and writes it, the forum's live set and its change log
together, and a withdrawal can never be undone by an update racing it.

A post id is claimed for one forum by its tombstone ``P:{p:ID}:forum`` (``lua/claim_post_id.lua``,
its own slot), written once per life of the id and never shortened: two registrations of a new
id in different forums cannot both win, and the id keeps naming its forum for
``TOMBSTONE_GRACE_SECONDS`` after every trace of the post may have gone (its expiry or its
withdrawal, plus the attribution window). Until then the id cannot move to another forum, and a
withdrawn id cannot come back (its metadata, marked withdrawn, lives as long as the tombstone).
After that the id is free: registering it starts a new post, in any forum, with no counts.
The lifecycle is written down in docs/reliability.md ("Lifecycle").
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from core.storage.decayed import CountFields
from core.storage.keys import TOTAL_FIELDS, Keys, policy_fields
from core.storage.records import Decayed, ForumRecord, PostConflict, PostRecord, text, totals
from core.storage.scripts import ScriptCall, Scripts, batch, run

# Fresh withdrawals that the serve path checks slates against (P:withdrawn) are kept this long.
WITHDRAWN_KEEP_SECONDS = 3600
# How long an id stays reserved after every trace of its post may have gone: the longest post
# lifetime the API accepts (30 days), so that a sweeper stopped for days, or a web process that
# has not reloaded its snapshot in full, never meets the id in a new life.
TOMBSTONE_GRACE_SECONDS = 30 * 86_400
# A withdrawal's retention when the caller gives none: the default attribution window.
DEFAULT_RETENTION = 86_400


@dataclass(frozen=True)
class Put:
    """What a registration or update did: whether the post is new, and its lifetime."""

    created: bool
    created_at: float
    expires_at: float


def tombstone_seconds(expires_at: float, now: float, retention: int) -> int:
    """How long, from ``now``, a post's tombstone must last: past its expiry (or now) plus
    ``retention`` (when its events may still count), plus the grace."""
    return math.ceil(max(expires_at - now, 0) + retention + TOMBSTONE_GRACE_SECONDS)


def claim_post_id_call(
    keys: Keys, post_id: str, forum_id: str, seconds: int, extend: bool = True
) -> ScriptCall:
    """KEYS/ARGV of ``lua/claim_post_id.lua``: claim the id for ``seconds``, or extend the
    forum's claim to last that long (``extend``; a claim is never shortened)."""
    return ScriptCall([keys.post_forum(post_id)], [forum_id, seconds, int(extend)])


def put_post_call(
    keys: Keys, post_id: str, forum_id: str, now: float, lifetime: tuple[float | None, ...],
    retention: int, keep_us: int,
) -> ScriptCall:  # fmt: skip
    """KEYS/ARGV of ``lua/put_post.lua``; ``lifetime`` is (created_at, seconds, default
    seconds), None for what the post keeps."""
    created_at, seconds, default = ("" if v is None else repr(float(v)) for v in lifetime)
    post_keys = [keys.post(forum_id, post_id), keys.live(forum_id), keys.changes(forum_id),
                 keys.stats(forum_id), keys.gone(forum_id)]  # fmt: skip
    return ScriptCall(
        post_keys, [post_id, forum_id, repr(now), created_at, seconds, default, retention, keep_us]
    )


def withdraw_post_call(
    keys: Keys, post_id: str, forum_id: str, now: float, seconds: int, keep_us: int
) -> ScriptCall:
    """KEYS/ARGV of ``lua/withdraw_post.lua``."""
    post_keys = [keys.post(forum_id, post_id), keys.live(forum_id), keys.changes(forum_id),
                 keys.gone(forum_id)]  # fmt: skip
    return ScriptCall(post_keys, [post_id, forum_id, repr(now), seconds, keep_us])


def forum_ids(client: redis.Redis, keys: Keys) -> list[str]:
    """Every forum with a post not yet pruned, sorted."""
    found: list[bytes] = client.zrange(keys.forums, 0, -1)  # type: ignore[assignment]
    return [f.decode() for f in found]


def encode_cursor(forum_id: str) -> str:
    """An opaque paging cursor: the last forum id of a page, in hex. Every even-length hex
    string is a cursor (a place in the forums' byte order), so none is refused."""
    return forum_id.encode().hex()


def decode_cursor(cursor: str) -> bytes:
    """The place in the forums' order that a cursor of :func:`encode_cursor` stands for.

    Raises:
        ValueError: not hex digits in pairs.
    """
    return bytes.fromhex(cursor)


class Catalogue:
    """``forum_window``: W of the windowed forum totals (picks the policy's fields);
    ``keep_us``: how long a forum's change log keeps a change; ``half_life``: the half-life of
    the decayed counts that post and forum reads add, in seconds (0: none)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, forum_window: int, keep_us: int,
        half_life: float = 0,
    ) -> None:  # fmt: skip
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.policy_fields = policy_fields(forum_window)
        self.decayed = CountFields.of(forum_window, half_life) if half_life else None
        self.keep_us = keep_us

    def register(
        self, post_id: str, forum_id: str, now: float, retention: int, *,
        created_at: float | None = None, lifetime: float | None = None,
        default_lifetime: float = 259_200,
    ) -> Put:  # fmt: skip
        """Register a post, or update it: an update keeps the ``created_at`` and ``lifetime``
        (seconds) it does not give, a new post is created ``now`` and lives
        ``default_lifetime``. Its metadata outlives its expiry by ``retention`` seconds.
        Three round trips: claim the id, the forum's atomic step, extend the claim.

        Raises:
            PostConflict: the id belongs to another forum, or the post was withdrawn.
        """
        # A refused registration must not extend the claim: only the write below does.
        owner = self._claim(post_id, forum_id, tombstone_seconds(now, now, retention))
        if owner != forum_id:
            raise PostConflict(f"post {post_id} belongs to forum {owner}")
        lifetimes = (created_at, lifetime, default_lifetime)
        call = put_post_call(self.keys, post_id, forum_id, now, lifetimes, retention, self.keep_us)
        reply = self.scripts.put_post(keys=call.keys, args=call.args)
        if not int(reply[0]):
            raise PostConflict(f"post {post_id} was withdrawn and cannot be registered again")
        put = Put(bool(int(reply[1])), float(reply[2]), float(reply[3]))
        pipe = batch(self.client)
        seconds = tombstone_seconds(put.expires_at, now, retention)
        run(self.scripts.claim_post_id, claim_post_id_call(self.keys, post_id, forum_id, seconds),
            pipe)  # fmt: skip
        # After the post is live: pruning, which forgets a forum it finds empty, checks again.
        pipe.zadd(self.keys.forums, {forum_id: 0})
        pipe.execute()
        return put

    def put_post(
        self, post_id: str, forum_id: str, created_at: float, expires_at: float, retention: int,
        now: float | None = None,
    ) -> bool:  # fmt: skip
        """Register or update a post with the given lifetime; True when it is new
        (:meth:`register`; ``now`` defaults to the local clock)."""
        now = time.time() if now is None else now
        lifetime = expires_at - created_at
        return self.register(post_id, forum_id, now, retention, created_at=created_at,
                             lifetime=lifetime).created  # fmt: skip

    def _claim(self, post_id: str, forum_id: str, seconds: int) -> str:
        call = claim_post_id_call(self.keys, post_id, forum_id, seconds, extend=False)
        return str(text(self.scripts.claim_post_id(keys=call.keys, args=call.args)))

    def delete_post(self, post_id: str, now: float, retention: int = DEFAULT_RETENTION) -> bool:
        """Withdraw a post for good; False when the id is unknown (no tombstone).

        The fresh-withdrawals set that the serve path reads is written first, then the forum's
        atomic step, then the tombstone is extended: one round trip after the look-up.
        """
        forum_id = text(self.client.get(self.keys.post_forum(post_id)))
        if forum_id is None:
            return False
        seconds = tombstone_seconds(now, now, retention)
        pipe = batch(self.client)
        pipe.zadd(self.keys.withdrawn, {post_id: now})
        pipe.zremrangebyscore(self.keys.withdrawn, "-inf", now - WITHDRAWN_KEEP_SECONDS)
        call = withdraw_post_call(self.keys, post_id, forum_id, now, seconds, self.keep_us)
        run(self.scripts.withdraw_post, call, pipe)
        run(self.scripts.claim_post_id, claim_post_id_call(self.keys, post_id, forum_id, seconds),
            pipe)  # fmt: skip
        pipe.zadd(self.keys.forums, {forum_id: 0})  # pruning removes the withdrawn post's counts
        pipe.execute()
        return True

    def get_post(self, post_id: str, now: float | None = None) -> PostRecord | None:
        """The post, its counts and its forum's policy counts, and with a half-life both
        decayed to ``now`` (default: the local clock); two round trips. None when unknown or
        forgotten."""
        forum_id = text(self.client.get(self.keys.post_forum(post_id)))
        if forum_id is None:
            return None
        pipe = batch(self.client)
        pipe.hgetall(self.keys.post(forum_id, post_id))
        fields = [f"i:{post_id}", f"c:{post_id}", *self.policy_fields]
        if self.decayed is not None:
            fields += [f.decode() for f in self.decayed.posts([post_id.encode()])]
            fields += self.decayed.forum
        pipe.hmget(self.keys.stats(forum_id), fields)
        raw, counts = pipe.execute()
        if not raw:
            return None
        meta = {text(k): text(v) for k, v in raw.items()}
        imps, clicks = totals(counts[:2])
        return PostRecord(
            post_id=post_id, forum_id=forum_id,
            created_at=float(meta.get("created_at") or 0),
            expires_at=float(meta.get("expires_at") or 0),
            deleted=meta.get("deleted") == "1",
            impressions=imps, clicks=clicks, forum_policy_counts=totals(counts[2:4]),
            decayed=self._decayed(counts[4:], time.time() if now is None else now),
        )  # fmt: skip

    def _decayed(self, values: list[bytes | None], now: float) -> Decayed | None:
        """Groups of decayed values and their time, decayed to ``now``; None without a
        half-life."""
        if self.decayed is None:
            return None
        return Decayed(self.decayed.half_life, list(self.decayed.counts(values, now)))

    def forum_ids(self) -> list[str]:
        return forum_ids(self.client, self.keys)

    def forum_page(self, after: bytes | None, limit: int) -> tuple[list[str], str | None]:
        """Up to ``limit`` forums after ``after`` in byte order, and the last one when more
        follow (else None): one command."""
        start = b"-" if after is None else b"(" + after
        found = [str(text(f)) for f in
                 self.client.zrangebylex(self.keys.forums, start, "+", 0, limit + 1)]  # fmt: skip
        more = len(found) > limit
        return found[:limit], found[limit - 1] if more else None

    def get_forum(self, forum_id: str, now: float) -> ForumRecord | None:
        """One forum (one round trip); None when it is neither active nor has history."""
        pipe = batch(self.client)
        pipe.zscore(self.keys.forums, forum_id)
        pipe.exists(self.keys.stats(forum_id))
        self._queue_forum(pipe, forum_id, now)
        active, history, counts, live = pipe.execute()
        if active is None and not history:
            return None
        return self._forum(forum_id, counts, live, now)

    def get_forums(self, forum_ids: Sequence[str], now: float) -> list[ForumRecord]:
        """Totals, live post counts and the policy's counts of the given forums, in one round
        trip (two commands a forum)."""
        pipe = batch(self.client)
        for forum_id in forum_ids:
            self._queue_forum(pipe, forum_id, now)
        replies = pipe.execute()
        return [
            self._forum(forum_id, counts, live, now)
            for forum_id, counts, live in zip(forum_ids, replies[0::2], replies[1::2], strict=True)
        ]

    def _queue_forum(self, pipe: redis.client.Pipeline, forum_id: str, now: float) -> None:
        decayed = () if self.decayed is None else self.decayed.forum
        pipe.hmget(self.keys.stats(forum_id), *TOTAL_FIELDS, *self.policy_fields, *decayed)
        pipe.zcount(self.keys.live(forum_id), f"({now}", "+inf")

    def _forum(
        self, forum_id: str, counts: list[bytes | None], live: int, now: float
    ) -> ForumRecord:
        imps, clicks = totals(counts[:2])
        decayed = self._decayed(counts[4:], now)
        return ForumRecord(forum_id, imps, clicks, int(live), totals(counts[2:4]), decayed)
