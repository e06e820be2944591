"""Every Redis key and command of postbandit lives here.

Key layout (``P`` is the configurable prefix; ``{...}`` are Redis Cluster hash tags, so each
forum's candidates, statistics and de-duplication markers share one slot and one forum is read,
or updated atomically, in one round trip):

==============================  ========  ==================================================
key                             type      content
==============================  ========  ==================================================
``P:forums``                    set       every forum id ever registered
``P:{f:F}:live``                zset      post id -> expiry (unix seconds) of forum F's posts
``P:{f:F}:stats``               hash      ``i:<post>``/``c:<post>`` counts; ``_i``/``_c`` totals
``P:{f:F}:seen:R``              set       ``i:<post>``/``c:<post>`` counted for request R (TTL)
``P:post:ID``                   hash      forum_id, created_at, expires_at, deleted (TTL)
``P:{r:R}``                     hash      served request R: ``_u`` user, ``_p`` policy,
                                          ``_t`` served ms, ``<post>`` -> forum (TTL)
``P:{u:U}:clicked``             zset      post id -> click time for member U (TTL)
``P:withdrawn``                 zset      post id -> withdrawal time, the last hour only
``P:decisions``                 stream    served slates for offline evaluation (capped)
``P:outcomes``                  stream    attributable events ``r`` request, ``p`` post,
                                          ``k`` kind ``i``/``c`` (capped)
==============================  ========  ==================================================

Counts only ever change through :data:`APPLY_EVENT` (a Lua script), which marks the event as
seen and increments the post and forum counters in one atomic step; a marker that is already
present makes the event a no-op, so retries and redelivered tasks never count twice.

The decision log (``P:decisions``, ``P:outcomes``) is append-only and capped by length
(``XADD MAXLEN ~``): it outlives the attribution window, so an export can join a slate with
its final outcomes. It is written in the same round trip as the served slate and the events.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from redis.typing import EncodableT

WITHDRAWN_KEEP_SECONDS = 3600
REQUEST_ID_LENGTH = 28
# The outcome stream keeps this many entries per decision kept: room for an impression and a
# click of every post of a ten-post slate.
OUTCOMES_PER_DECISION = 20

StreamEntry = tuple[str, dict[str, str]]

APPLY_EVENT = """
local stats, seen = KEYS[1], KEYS[2]
local kind, post, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('SADD', seen, kind .. ':' .. post) == 0 then
  return 0
end
if redis.call('TTL', seen) < 0 then
  redis.call('EXPIRE', seen, ttl)
end
local applied = 1
if kind == 'c' and redis.call('SADD', seen, 'i:' .. post) == 1 then
  redis.call('HINCRBY', stats, 'i:' .. post, 1)
  redis.call('HINCRBY', stats, '_i', 1)
  applied = 2
end
redis.call('HINCRBY', stats, kind .. ':' .. post, 1)
redis.call('HINCRBY', stats, '_' .. kind, 1)
return applied
"""


@dataclass(frozen=True)
class Keys:
    """Key templates under one prefix."""

    prefix: str

    @property
    def forums(self) -> str:
        return f"{self.prefix}:forums"

    @property
    def withdrawn(self) -> str:
        return f"{self.prefix}:withdrawn"

    def live(self, forum_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:live"

    def stats(self, forum_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:stats"

    def seen(self, forum_id: str, request_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:seen:{request_id}"

    def post(self, post_id: str) -> str:
        return f"{self.prefix}:post:{post_id}"

    def served(self, request_id: str) -> str:
        return f"{self.prefix}:{{r:{request_id}}}"

    def clicked(self, user_id: str) -> str:
        return f"{self.prefix}:{{u:{user_id}}}:clicked"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}:decisions"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}:outcomes"


def new_request_id(now: float | None = None) -> str:
    """A time-ordered id: 12 hex digits of milliseconds, then 16 random hex digits."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis:012x}{secrets.token_hex(8)}"


def request_time(request_id: str) -> float | None:
    """When a request id from :func:`new_request_id` was issued, or None if it is not one."""
    if len(request_id) != REQUEST_ID_LENGTH:
        return None
    try:
        return int(request_id[:12], 16) / 1000.0
    except ValueError:
        return None


@dataclass(frozen=True)
class PostRecord:
    post_id: str
    forum_id: str
    created_at: float
    expires_at: float
    deleted: bool
    impressions: int
    clicks: int


@dataclass(frozen=True)
class ForumRecord:
    forum_id: str
    impressions: int
    clicks: int
    live_posts: int


@dataclass(frozen=True)
class ForumCatalog:
    """One forum as read for a snapshot: its live posts, their expiry and statistics."""

    forum_id: str
    post_ids: list[str]
    expires_at: list[float]
    impressions: list[int]
    clicks: list[int]
    total_impressions: int
    total_clicks: int


@dataclass(frozen=True)
class RequestContext:
    """What the request path reads per request: the member's recent clicks, fresh withdrawals."""

    clicked: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Served:
    """A served recommendation as remembered for attribution."""

    request_id: str
    user_id: str
    policy: str
    forums: dict[str, str]  # post id -> forum id


class PostConflict(Exception):
    """The post exists with another forum, or was withdrawn."""


class Storage:
    """Redis access for the service and the workers. The client is passed in.

    ``decision_log_maxlen`` is how many decisions the decision log keeps (0: no log).
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "pb", decision_log_maxlen: int = 0
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.decision_log_maxlen = decision_log_maxlen
        self._apply = client.register_script(APPLY_EVENT)

    # ---- catalogue -------------------------------------------------------------------------

    def put_post(
        self, post_id: str, forum_id: str, created_at: float, expires_at: float, retention: int
    ) -> bool:
        """Register or update a candidate; True when it is new.

        Raises:
            PostConflict: the post belongs to another forum or was withdrawn.
        """
        meta_key = self.keys.post(post_id)
        current = self.client.hmget(meta_key, "forum_id", "deleted")
        old_forum, deleted = (_text(v) for v in current)
        if deleted == "1":
            raise PostConflict(f"post {post_id} was withdrawn and cannot be registered again")
        if old_forum is not None and old_forum != forum_id:
            raise PostConflict(f"post {post_id} belongs to forum {old_forum}")
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            meta_key,
            mapping={
                "forum_id": forum_id,
                "created_at": created_at,
                "expires_at": expires_at,
                "deleted": 0,
            },
        )
        pipe.expireat(meta_key, int(max(expires_at, time.time())) + retention)
        pipe.sadd(self.keys.forums, forum_id)
        pipe.zadd(self.keys.live(forum_id), {post_id: expires_at})
        pipe.execute()
        return old_forum is None

    def delete_post(self, post_id: str, now: float) -> bool:
        """Withdraw a post for good; False when the post is unknown."""
        meta_key = self.keys.post(post_id)
        forum_id = _text(self.client.hget(meta_key, "forum_id"))
        if forum_id is None:
            return False
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.withdrawn, {post_id: now})
        pipe.zremrangebyscore(self.keys.withdrawn, "-inf", now - WITHDRAWN_KEEP_SECONDS)
        pipe.hset(meta_key, "deleted", 1)
        pipe.zrem(self.keys.live(forum_id), post_id)
        pipe.execute()
        return True

    def get_post(self, post_id: str) -> PostRecord | None:
        raw = self.client.hgetall(self.keys.post(post_id))
        if not raw:
            return None
        meta = {_text(k): _text(v) for k, v in raw.items()}
        forum_id = str(meta["forum_id"])
        imps, clicks = self.client.hmget(self.keys.stats(forum_id), f"i:{post_id}", f"c:{post_id}")
        return PostRecord(
            post_id=post_id, forum_id=forum_id,
            created_at=float(meta.get("created_at") or 0),
            expires_at=float(meta.get("expires_at") or 0),
            deleted=meta.get("deleted") == "1",
            impressions=int(imps or 0), clicks=int(clicks or 0),
        )  # fmt: skip

    def forum_ids(self) -> list[str]:
        return sorted(str(_text(f)) for f in self.client.smembers(self.keys.forums))

    def get_forums(self, forum_ids: Sequence[str], now: float) -> list[ForumRecord]:
        """Totals and live post counts of the given forums, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for forum_id in forum_ids:
            pipe.hmget(self.keys.stats(forum_id), "_i", "_c")
            pipe.zcount(self.keys.live(forum_id), f"({now}", "+inf")
        replies = pipe.execute()
        records = []
        for forum_id, (imps, clicks), live in zip(
            forum_ids, replies[0::2], replies[1::2], strict=True
        ):
            records.append(ForumRecord(forum_id, int(imps or 0), int(clicks or 0), int(live)))
        return records

    def known_forums(self, forum_ids: Sequence[str]) -> list[bool]:
        if not forum_ids:
            return []
        return [bool(x) for x in self.client.smismember(self.keys.forums, list(forum_ids))]

    # ---- snapshot for the request path -----------------------------------------------------

    def read_catalog(self, now: float) -> list[ForumCatalog]:
        """Every forum's live posts and statistics: two round trips in all."""
        forum_ids = self.forum_ids()
        pipe = self.client.pipeline(transaction=False)
        for forum_id in forum_ids:
            pipe.zrangebyscore(self.keys.live(forum_id), f"({now}", "+inf", withscores=True)
            pipe.hgetall(self.keys.stats(forum_id))
        replies = pipe.execute()
        return [
            _forum_catalog(forum_id, live, stats)
            for forum_id, live, stats in zip(forum_ids, replies[0::2], replies[1::2], strict=True)
        ]

    def request_context(
        self, user_id: str, now: float, reclick_seconds: int, withdrawn_since: float
    ) -> RequestContext:
        """The member's recently clicked posts and posts withdrawn since ``withdrawn_since``."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.clicked(user_id), now - reclick_seconds, "+inf")
        pipe.zrangebyscore(self.keys.withdrawn, withdrawn_since, "+inf")
        clicked, withdrawn = pipe.execute()
        return RequestContext([str(_text(p)) for p in clicked], [str(_text(p)) for p in withdrawn])

    def remember_served(
        self, served: Served, ttl: int, decision: dict[EncodableT, EncodableT] | None = None
    ) -> None:
        """Remember a served slate for attribution of its events (expires after ``ttl``).

        ``decision`` (stream fields) is appended to the decision log in the same round trip
        when the log is on.
        """
        key = self.keys.served(served.request_id)
        mapping: dict[EncodableT, EncodableT] = {
            "_u": served.user_id, "_p": served.policy, "_t": int(time.time() * 1000),
        }  # fmt: skip
        for post_id, forum_id in served.forums.items():
            mapping[post_id] = forum_id
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, ttl)
        if decision is not None and self.decision_log_maxlen:
            pipe.xadd(self.keys.decisions, decision, maxlen=self.decision_log_maxlen)
        pipe.execute()

    # ---- events (worker side) --------------------------------------------------------------

    def lookup_served(self, request_ids: Iterable[str]) -> dict[str, Served]:
        """The served slates among ``request_ids`` that are still remembered."""
        unique = list(dict.fromkeys(request_ids))
        pipe = self.client.pipeline(transaction=False)
        for request_id in unique:
            pipe.hgetall(self.keys.served(request_id))
        found = {}
        for request_id, raw in zip(unique, pipe.execute(), strict=True):
            if raw:
                found[request_id] = _served(request_id, raw)
        return found

    def apply_events(
        self, kind: str, events: Sequence[tuple[str, str, str]], ttl: int
    ) -> list[int]:
        """Apply (request id, post id, forum id) events of ``kind`` ('i' or 'c') atomically.

        Returns per event 0 (already counted), 1 (counted) or 2 (a click that also counted
        its missing impression). With the decision log on, every event is also appended to
        the outcome stream in the same round trip (a replay appends it again: readers of the
        stream treat it as a set).
        """
        pipe = self.client.pipeline(transaction=False)
        for request_id, post_id, forum_id in events:
            self._apply(
                keys=[self.keys.stats(forum_id), self.keys.seen(forum_id, request_id)],
                args=[kind, post_id, ttl],
                client=pipe,
            )
        if self.decision_log_maxlen:
            maxlen = self.decision_log_maxlen * OUTCOMES_PER_DECISION
            for request_id, post_id, _ in events:
                pipe.xadd(self.keys.outcomes, {"r": request_id, "p": post_id, "k": kind},
                          maxlen=maxlen)  # fmt: skip
        return [int(x) for x in pipe.execute()[: len(events)]]

    def remember_clicks(self, clicks: Sequence[tuple[str, str]], now: float, window: int) -> None:
        """Record (user id, post id) clicks so the posts are not recommended again in ``window``."""
        pipe = self.client.pipeline(transaction=False)
        for user_id, post_id in clicks:
            key = self.keys.clicked(user_id)
            pipe.zadd(key, {post_id: now})
            pipe.zremrangebyscore(key, "-inf", now - window)
            pipe.expire(key, window)
        pipe.execute()

    # ---- decision log -----------------------------------------------------------------------

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
        if not first or length < self.decision_log_maxlen * OUTCOMES_PER_DECISION:
            return None
        return int(_entries(first)[0][0].split("-")[0]) / 1000.0

    def ping(self) -> bool:
        return bool(self.client.ping())


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a Celery queue of the Redis transport (all its priority lists)."""
    pipe = client.pipeline(transaction=False)
    for step in PRIORITY_STEPS:
        pipe.llen(f"{queue}{RedisChannel.sep}{step}" if step else queue)
    return sum(int(n) for n in pipe.execute())


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value


def _forum_catalog(
    forum_id: str, live: list[tuple[bytes, float]], stats: dict[bytes, bytes]
) -> ForumCatalog:
    counts = {k.decode(): int(v) for k, v in stats.items()}
    post_ids = [p.decode() for p, _ in live]
    return ForumCatalog(
        forum_id=forum_id,
        post_ids=post_ids,
        expires_at=[score for _, score in live],
        impressions=[counts.get(f"i:{p}", 0) for p in post_ids],
        clicks=[counts.get(f"c:{p}", 0) for p in post_ids],
        total_impressions=counts.get("_i", 0),
        total_clicks=counts.get("_c", 0),
    )


def _entries(raw: Any) -> list[StreamEntry]:
    """XRANGE's reply as (id, fields) with text everywhere."""
    return [(str(_text(i)), {str(_text(k)): str(_text(v)) for k, v in f.items()}) for i, f in raw]


def _served(request_id: str, raw: dict[bytes, bytes]) -> Served:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    user_id = fields.pop("_u", "")
    policy = fields.pop("_p", "")
    fields.pop("_t", None)
    return Served(request_id, user_id, policy, fields)
