"""The catalogue: posts (metadata, liveness in their forum), forums, and withdrawals.

Every change of a post's liveness (register, update, withdraw) is also noted in its forum's
change log by the same atomic step (``lua/set_live.lua``), so snapshots read only what changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
from redis.typing import EncodableT

from core.storage.keys import TOTAL_FIELDS, Keys, policy_fields
from core.storage.records import ForumRecord, PostConflict, PostRecord, text, totals
from core.storage.scripts import ScriptCall, Scripts, run

WITHDRAWN_KEEP_SECONDS = 3600


def set_live_call(
    keys: Keys, post_id: str, forum_id: str, expires_at: float | None, keep_us: int
) -> ScriptCall:
    """KEYS/ARGV of ``lua/set_live.lua``: live until ``expires_at`` (None: withdrawn)."""
    expiry = "" if expires_at is None else expires_at
    return ScriptCall([keys.live(forum_id), keys.changes(forum_id)], [post_id, expiry, keep_us])


def forum_ids(client: redis.Redis, keys: Keys) -> list[str]:
    """Every forum ever registered, sorted."""
    return sorted(str(text(f)) for f in client.smembers(keys.forums))


class Catalogue:
    """``forum_window``: W of the windowed forum totals (picks the policy's fields);
    ``changes_keep_us``: how long a forum's change log keeps a change."""

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, forum_window: int, keep_us: int
    ) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.policy_fields = policy_fields(forum_window)
        self.keep_us = keep_us

    def put_post(
        self, post_id: str, forum_id: str, created_at: float, expires_at: float, retention: int
    ) -> bool:
        """Register or update a candidate; True when it is new. Its metadata outlives its
        expiry by ``retention`` seconds.

        Raises:
            PostConflict: the post belongs to another forum or was withdrawn.
        """
        meta_key = self.keys.post(post_id)
        old_forum, deleted = (text(v) for v in self.client.hmget(meta_key, "forum_id", "deleted"))
        if deleted == "1":
            raise PostConflict(f"post {post_id} was withdrawn and cannot be registered again")
        if old_forum is not None and old_forum != forum_id:
            raise PostConflict(f"post {post_id} belongs to forum {old_forum}")
        meta: dict[EncodableT, EncodableT] = {
            "forum_id": forum_id, "created_at": created_at, "expires_at": expires_at, "deleted": 0
        }  # fmt: skip
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(meta_key, mapping=meta)
        pipe.expireat(meta_key, int(max(expires_at, time.time())) + retention)
        pipe.sadd(self.keys.forums, forum_id)
        call = set_live_call(self.keys, post_id, forum_id, expires_at, self.keep_us)
        run(self.scripts.set_live, call, pipe)
        pipe.execute()
        return old_forum is None

    def delete_post(self, post_id: str, now: float) -> bool:
        """Withdraw a post for good; False when the post is unknown."""
        meta_key = self.keys.post(post_id)
        forum_id = text(self.client.hget(meta_key, "forum_id"))
        if forum_id is None:
            return False
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.withdrawn, {post_id: now})
        pipe.zremrangebyscore(self.keys.withdrawn, "-inf", now - WITHDRAWN_KEEP_SECONDS)
        pipe.hset(meta_key, "deleted", 1)
        run(self.scripts.set_live, set_live_call(self.keys, post_id, forum_id, None, self.keep_us),
            pipe)  # fmt: skip
        pipe.execute()
        return True

    def get_post(self, post_id: str) -> PostRecord | None:
        """The post, its counts and its forum's policy counts (two round trips); None when
        unknown or long expired."""
        raw = self.client.hgetall(self.keys.post(post_id))
        if not raw:
            return None
        meta = {text(k): text(v) for k, v in raw.items()}
        forum_id = str(meta["forum_id"])
        counts = self.client.hmget(
            self.keys.stats(forum_id), f"i:{post_id}", f"c:{post_id}", *self.policy_fields
        )
        imps, clicks = totals(counts[:2])
        return PostRecord(
            post_id=post_id, forum_id=forum_id,
            created_at=float(meta.get("created_at") or 0),
            expires_at=float(meta.get("expires_at") or 0),
            deleted=meta.get("deleted") == "1",
            impressions=imps, clicks=clicks, forum_policy_counts=totals(counts[2:]),
        )  # fmt: skip

    def forum_ids(self) -> list[str]:
        return forum_ids(self.client, self.keys)

    def known_forums(self, forum_ids: Sequence[str]) -> list[bool]:
        if not forum_ids:
            return []
        return [bool(x) for x in self.client.smismember(self.keys.forums, list(forum_ids))]

    def get_forums(self, forum_ids: Sequence[str], now: float) -> list[ForumRecord]:
        """Totals, live post counts and the policy's counts of the given forums, in one round
        trip (two commands a forum)."""
        pipe = self.client.pipeline(transaction=False)
        for forum_id in forum_ids:
            pipe.hmget(self.keys.stats(forum_id), *TOTAL_FIELDS, *self.policy_fields)
            pipe.zcount(self.keys.live(forum_id), f"({now}", "+inf")
        replies = pipe.execute()
        records = []
        for forum_id, counts, live in zip(forum_ids, replies[0::2], replies[1::2], strict=True):
            imps, clicks = totals(counts[:2])
            records.append(ForumRecord(forum_id, imps, clicks, int(live), totals(counts[2:])))
        return records
