"""Every Redis key and command of postbandit lives here.

Key layout (``P`` is the configurable prefix; ``{...}`` are Redis Cluster hash tags, so each
forum's candidates, statistics and de-duplication markers share one slot and one forum is read,
or updated atomically, in one round trip):

==============================  ========  ==================================================
key                             type      content
==============================  ========  ==================================================
``P:forums``                    set       every forum id ever registered
``P:{f:F}:live``                zset      post id -> expiry (unix seconds) of forum F's posts
``P:{f:F}:stats``               hash      ``i:<post>``/``c:<post>`` counts; ``_i``/``_c`` totals;
                                          ``_wi``/``_wc`` windowed totals (see below)
``P:{f:F}:changes``             zset      post id -> when its counts or liveness last changed
                                          (Redis clock, microseconds; about the last 10 minutes)
``P:{f:F}:seen:R``              set       ``i:<post>``/``c:<post>`` counted for request R;
                                          ``w:<post>`` its impression counted in ``_wi`` (TTL)
``P:post:ID``                   hash      forum_id, created_at, expires_at, deleted (TTL)
``P:{r:R}``                     hash      served request R: ``_u`` user, ``_p`` policy,
                                          ``_t`` served ms, ``<post>`` -> forum (TTL)
``P:{u:U}:clicked``             zset      post id -> click time for member U (TTL)
``P:withdrawn``                 zset      post id -> withdrawal time, the last hour only
``P:decisions``                 stream    served slates for offline evaluation (capped)
``P:outcomes``                  stream    attributable events ``r`` request, ``p`` post,
                                          ``k`` kind ``i``/``c`` (capped)
``P:pending``                   hash      accepted event batch id -> JSON task arguments,
                                          until a worker applied it (the journal)
``P:pending:since``             zset      batch id -> when it was last handed to the broker
``P:pending:lock``              string    held by the worker sweeping the journal (TTL)
==============================  ========  ==================================================

Posts whose attribution window closed after they expired leave ``P:{f:F}:live`` and
``P:{f:F}:stats`` (:data:`PRUNE_EXPIRED`, run by the workers every minute), so those keys hold
recent posts only; the forum totals, windowed ones too, keep their counts.

The windowed forum totals count each post over its first W impressions only (W is the forum
window, ``BANDIT_FORUM_WINDOW``): an impression counts in ``_wi`` when, counted, its post has
at most W impressions, and a click counts in ``_wc`` when its impression counted in ``_wi``.
Every post gets its first impressions whatever its CTR, so these totals estimate a typical
post of the forum, where ``_i``/``_c`` lean towards the posts the policy already favours; the
policy takes them as the forum's counts (:attr:`Storage.policy_fields`). With W = 0 they are
not written and the policy takes ``_i``/``_c``. A forum hash without them (written before they
existed, or while W was 0) reads as 0 impressions and 0 clicks: the forum's prior is then the
global one until impressions within the window are counted again (a post that already had W
impressions adds none). Changing W applies to the events counted from then on.

Every batch of events answered 202 is first written to the journal (``P:pending``) and removed
by the worker that applied it; workers publish again the batches that stayed there longer than
the broker's visibility timeout (workers/sweeper.py), which covers the messages the Redis broker
can lose. Applying a batch twice is harmless:

Counts only ever change through :data:`APPLY_EVENTS` (a Lua script), which marks each event as
seen and increments the post and forum counters in one atomic step; a marker that is already
present makes the event a no-op, so retries and redelivered tasks never count twice.

Every change of a post's counts (:data:`APPLY_EVENTS`) or liveness (:data:`SET_LIVE`: register,
update, withdraw) also records the post in its forum's change log, in the same atomic step. The
web processes' snapshots read only what changed since their last read (:meth:`Storage.read_changes`)
instead of every statistic every second.

The decision log (``P:decisions``, ``P:outcomes``) is append-only and capped by length
(``XADD MAXLEN ~``): it outlives the attribution window, so an export can join a slate with
its final outcomes. It is written in the same round trip as the served slate and the events.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
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

# KEYS: served slate, the member's clicks, withdrawals, decision log.
# ARGV: ttl, clicked since, withdrawn since, check (1/0), decision-log cap (0: no entry), number
# of posts n, the slate's fields (n post/forum pairs, then _u, _p, _t), then the decision's.
# With check, a slate holding a post the member clicked or that was withdrawn (since the given
# times) is not written; the reply is then {0, clicked posts, withdrawn posts}, else {1}.
SERVE_SLATE = """
local served, clicked, withdrawn, decisions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = tonumber(ARGV[6])
local slate_end = 6 + 2 * n + 6
if ARGV[4] == '1' then
  local clicked_since, withdrawn_since = tonumber(ARGV[2]), tonumber(ARGV[3])
  for i = 7, 6 + 2 * n, 2 do
    local c = redis.call('ZSCORE', clicked, ARGV[i])
    local w = redis.call('ZSCORE', withdrawn, ARGV[i])
    if (c and tonumber(c) >= clicked_since) or (w and tonumber(w) >= withdrawn_since) then
      return {0, redis.call('ZRANGEBYSCORE', clicked, ARGV[2], '+inf'),
              redis.call('ZRANGEBYSCORE', withdrawn, ARGV[3], '+inf')}
    end
  end
end
redis.call('HSET', served, unpack(ARGV, 7, slate_end))
redis.call('EXPIRE', served, ARGV[1])
if ARGV[5] ~= '0' and #ARGV > slate_end then
  redis.call('XADD', decisions, 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, slate_end + 1, #ARGV))
end
return {1}
"""

# How long the change log remembers a change; a snapshot that has not read it for half of
# this reloads in full.
CHANGES_KEEP_SECONDS = 600
# A reader's cursor lags the server's clock at its read by this much, so that changes noted
# after a small step back of that clock are read (again) rather than missed; the periodic full
# reload of the snapshot covers larger steps.
CHANGES_OVERLAP_US = 250_000

# A forum's totals in its stats hash: over every impression, and over each post's first W.
TOTAL_FIELDS = ("_i", "_c")
WINDOW_FIELDS = ("_wi", "_wc")

# Lua: note that ``posts`` changed, at the server's clock in microseconds (a reader's cursor is
# that clock at its read, less a margin), and forget changes older than ``keep`` whenever the
# log grows.
_NOTE_CHANGES = """
local function note_changes(changes, posts, keep_us)
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local added = 0
  for first = 1, #posts, 500 do
    local scored = {}
    for i = first, math.min(first + 499, #posts) do
      scored[#scored + 1] = at
      scored[#scored + 1] = posts[i]
    end
    added = added + redis.call('ZADD', changes, unpack(scored))
  end
  if added > 0 then
    redis.call('ZREMRANGEBYSCORE', changes, '-inf', at - keep_us)
  end
end
"""

# KEYS: live set, change log of the forum. ARGV: post, expiry ('' withdraws), keep (us).
SET_LIVE = (
    _NOTE_CHANGES
    + """
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
note_changes(KEYS[2], {ARGV[1]}, tonumber(ARGV[3]))
"""
)

# KEYS: the forum's stats, its change log, then the seen-markers of the batch's requests.
# ARGV: kind ('i' or 'c'), marker ttl, change-log keep (us), forum window W, then per event:
# the index of its request's marker among the KEYS after the first two, and the post. Returns
# per event 0 (already counted), 1 (counted) or 2 (a click that also counted its missing
# impression). An impression also counts in the forum's windowed ``_wi`` when it is among its
# post's first W (never with W = 0), and then leaves the marker ``w:<post>``, so that the
# click of that impression, and only it, counts in ``_wc``. Each event costs a few Redis calls
# and the batch one change-log update per forum.
APPLY_EVENTS = (
    _NOTE_CHANGES
    + """
local function count_impression(stats, seen, post, window)
  local n = redis.call('HINCRBY', stats, 'i:' .. post, 1)
  redis.call('HINCRBY', stats, '_i', 1)
  if n > window then
    return false
  end
  redis.call('HINCRBY', stats, '_wi', 1)
  redis.call('SADD', seen, 'w:' .. post)
  return true
end

local stats, changes = KEYS[1], KEYS[2]
local kind, ttl, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local results, changed, marked = {}, {}, {}
for i = 5, #ARGV, 2 do
  local seen, post = KEYS[2 + tonumber(ARGV[i])], ARGV[i + 1]
  local applied = 0
  if redis.call('SADD', seen, kind .. ':' .. post) == 1 then
    if not marked[seen] and redis.call('TTL', seen) < 0 then
      redis.call('EXPIRE', seen, ttl)
    end
    marked[seen] = true
    applied = 1
    local windowed
    if kind == 'i' then
      windowed = count_impression(stats, seen, post, window)
    elseif redis.call('SADD', seen, 'i:' .. post) == 1 then
      windowed = count_impression(stats, seen, post, window)
      applied = 2
    else
      windowed = window > 0 and redis.call('SISMEMBER', seen, 'w:' .. post) == 1
    end
    if kind == 'c' then
      redis.call('HINCRBY', stats, 'c:' .. post, 1)
      redis.call('HINCRBY', stats, '_c', 1)
      if windowed then
        redis.call('HINCRBY', stats, '_wc', 1)
      end
    end
    changed[#changed + 1] = post
  end
  results[#results + 1] = applied
end
if #changed > 0 then
  note_changes(changes, changed, tonumber(ARGV[3]))
end
return results
"""
)

# KEYS: a forum's live posts, its statistics. ARGV: before, limit. Forgets up to ``limit`` posts
# that expired before ``before`` (unix seconds): they leave the live set and their counts leave
# the statistics hash. The forum totals, windowed ones too, keep them: they are the sums over
# every post ever counted.
PRUNE_EXPIRED = """
local live, stats = KEYS[1], KEYS[2]
local posts = redis.call('ZRANGEBYSCORE', live, '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, post in ipairs(posts) do
  redis.call('ZREM', live, post)
  redis.call('HDEL', stats, 'i:' .. post, 'c:' .. post)
end
return #posts
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

    def changes(self, forum_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:changes"

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

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    @property
    def pending_since(self) -> str:
        return f"{self.prefix}:pending:since"

    @property
    def pending_lock(self) -> str:
        return f"{self.prefix}:pending:lock"


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
    """A forum's totals over every impression, its live posts, and its (impressions, clicks)
    as the policy takes them (:attr:`Storage.policy_fields`)."""

    forum_id: str
    impressions: int
    clicks: int
    live_posts: int
    policy_counts: tuple[int, int]


@dataclass(frozen=True)
class PostStates:
    """Some posts of one forum as they are now: expiry (NaN once withdrawn) and counts."""

    post_ids: list[str]
    expires_at: list[float]
    impressions: list[int]
    clicks: list[int]


@dataclass(frozen=True)
class ForumRead:
    """One forum as read for a snapshot: its (impressions, clicks) as the policy takes them
    (:attr:`Storage.policy_fields`), and its posts that changed after the previous cursor
    (every live post on a full read; None when nothing changed)."""

    forum_id: str
    cursor: float
    policy_counts: tuple[int, int]
    posts: PostStates | None


@dataclass(frozen=True)
class RequestContext:
    """Posts to hide from a member: the ones they clicked recently, and fresh withdrawals."""

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

    ``decision_log_maxlen`` is how many decisions the decision log keeps (0: no log);
    ``forum_window`` is W of the windowed forum totals (0: none, the policy takes every
    impression).
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "pb",
        decision_log_maxlen: int = 0,
        forum_window: int = 0,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.decision_log_maxlen = decision_log_maxlen
        self.forum_window = forum_window
        self._apply = client.register_script(APPLY_EVENTS)
        self._set_live = client.register_script(SET_LIVE)
        self._serve = client.register_script(SERVE_SLATE)
        self._prune = client.register_script(PRUNE_EXPIRED)
        self.changes_keep_us = CHANGES_KEEP_SECONDS * 1_000_000
        self.changes_overlap_us = CHANGES_OVERLAP_US

    @property
    def policy_fields(self) -> tuple[str, str]:
        """The stats hash fields that the policy takes as a forum's (impressions, clicks):
        the windowed totals, or the totals over every impression when ``forum_window`` is 0."""
        return WINDOW_FIELDS if self.forum_window else TOTAL_FIELDS

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
        self._set_live_on(pipe, post_id, forum_id, expires_at)
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
        self._set_live_on(pipe, post_id, forum_id, None)
        pipe.execute()
        return True

    def _set_live_on(
        self, pipe: redis.client.Pipeline, post_id: str, forum_id: str, expires_at: float | None
    ) -> None:
        """Queue: make the post live until ``expires_at`` (None: withdraw it), noting the change."""
        self._set_live(
            keys=[self.keys.live(forum_id), self.keys.changes(forum_id)],
            args=[post_id, "" if expires_at is None else expires_at, self.changes_keep_us],
            client=pipe,
        )

    def prune_expired(self, before: float, limit: int = 1000) -> int:
        """Forget posts that expired before ``before`` (at most ``limit`` a forum): they leave
        their forum's live set and statistics, atomically per forum; how many were forgotten.

        Without this, every post ever registered would stay in those keys for good.
        """
        pipe = self.client.pipeline(transaction=False)
        for forum_id in self.forum_ids():
            keys = [self.keys.live(forum_id), self.keys.stats(forum_id)]
            self._prune(keys=keys, args=[before, limit], client=pipe)
        return sum(int(n) for n in pipe.execute())

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
        """Totals, live post counts and the policy's counts of the given forums, in one round
        trip."""
        pipe = self.client.pipeline(transaction=False)
        for forum_id in forum_ids:
            pipe.hmget(self.keys.stats(forum_id), *TOTAL_FIELDS, *self.policy_fields)
            pipe.zcount(self.keys.live(forum_id), f"({now}", "+inf")
        replies = pipe.execute()
        records = []
        for forum_id, counts, live in zip(forum_ids, replies[0::2], replies[1::2], strict=True):
            imps, clicks = _totals(counts[:2])
            records.append(ForumRecord(forum_id, imps, clicks, int(live), _totals(counts[2:])))
        return records

    def known_forums(self, forum_ids: Sequence[str]) -> list[bool]:
        if not forum_ids:
            return []
        return [bool(x) for x in self.client.smismember(self.keys.forums, list(forum_ids))]

    # ---- snapshot for the request path -----------------------------------------------------

    def read_changes(self, cursors: Mapping[str, float], now: float) -> list[ForumRead]:
        """Every forum's posts that changed after its cursor, with their current state.

        A forum missing from ``cursors`` is read in full (its live posts). Two round trips,
        plus two when new forums appear. The returned cursors lag the server's clock at the
        read by ``changes_overlap_us``: a change noted in the same microsecond, or after a
        small step back of the clock, is read (again) next time rather than missed.
        """
        forum_ids = self.forum_ids()
        known = [f for f in forum_ids if f in cursors]
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        for forum_id in known:
            pipe.zrangebyscore(self.keys.changes(forum_id), f"({cursors[forum_id]:.0f}", "+inf",
                               withscores=True)  # fmt: skip
            pipe.hmget(self.keys.stats(forum_id), *self.policy_fields)
        (seconds, micros), *replies = pipe.execute()
        read_at = seconds * 1_000_000 + micros - self.changes_overlap_us
        changed = {
            forum_id: (max(cursors[forum_id], read_at), log, counts)
            for forum_id, log, counts in zip(known, replies[0::2], replies[1::2], strict=True)
        }
        reads = self._changed_posts(changed)
        return reads + self.read_forums([f for f in forum_ids if f not in cursors], now)

    def _changed_posts(
        self, changed: dict[str, tuple[float, list[tuple[bytes, float]], list[Any]]]
    ) -> list[ForumRead]:
        pipe = self.client.pipeline(transaction=False)
        for forum_id, (_, log, _) in changed.items():
            if log:
                posts: list[Any] = [post for post, _ in log]
                pipe.zmscore(self.keys.live(forum_id), posts)
                pipe.hmget(self.keys.stats(forum_id), _count_fields(posts))
        replies = iter(pipe.execute())
        reads = []
        for forum_id, (cursor, log, counts) in changed.items():
            states = None
            if log:
                states = _post_states([p for p, _ in log], next(replies), next(replies))
            reads.append(ForumRead(forum_id, cursor, _totals(counts), states))
        return reads

    def read_forums(self, forum_ids: Sequence[str], now: float) -> list[ForumRead]:
        """The given forums in full: every live post's expiry and counts (two round trips)."""
        if not forum_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.time()  # first: changes after it come again from the next read_changes
        for forum_id in forum_ids:
            pipe.zrangebyscore(self.keys.live(forum_id), f"({now}", "+inf", withscores=True)
            pipe.hmget(self.keys.stats(forum_id), *self.policy_fields)
        (seconds, micros), *replies = pipe.execute()
        cursor = seconds * 1_000_000 + micros - self.changes_overlap_us
        lives, forum_counts = replies[0::2], replies[1::2]
        pipe = self.client.pipeline(transaction=False)
        for forum_id, live in zip(forum_ids, lives, strict=True):
            if live:
                pipe.hmget(self.keys.stats(forum_id), _count_fields([post for post, _ in live]))
        counts = iter(pipe.execute())
        reads = []
        for forum_id, live, forum in zip(forum_ids, lives, forum_counts, strict=True):
            states = _post_states(
                [p for p, _ in live], [e for _, e in live], next(counts) if live else []
            )
            reads.append(ForumRead(forum_id, cursor, _totals(forum), states))
        return reads

    def serve(
        self,
        served: Served,
        ttl: int,
        decision: dict[EncodableT, EncodableT] | None = None,
        hide_since: tuple[float, float] | None = None,
    ) -> RequestContext | None:
        """Remember a served slate for attribution of its events (expires after ``ttl``), and
        append ``decision`` (stream fields) to the decision log when the log is on: one
        atomic step, one round trip.

        With ``hide_since = (clicked since, withdrawn since)`` the slate is checked first:
        when it holds a post that the member clicked or that was withdrawn since then,
        nothing is written and the member's recently clicked and the recently withdrawn
        posts are returned, to choose again. None when the slate was remembered.
        """
        fields: list[EncodableT] = []
        for post_id, forum_id in served.forums.items():
            fields += [post_id, forum_id]
        fields += ["_u", served.user_id, "_p", served.policy, "_t", int(time.time() * 1000)]
        cap = self.decision_log_maxlen if decision is not None else 0
        if decision is not None and cap:
            for name, value in decision.items():
                fields += [name, value]
        clicked_since, withdrawn_since = hide_since or (0.0, 0.0)
        reply = self._serve(
            keys=[self.keys.served(served.request_id), self.keys.clicked(served.user_id),
                  self.keys.withdrawn, self.keys.decisions],
            args=[ttl, clicked_since, withdrawn_since, int(hide_since is not None), cap,
                  len(served.forums), *fields],
        )  # fmt: skip
        if reply[0]:
            return None
        return RequestContext([str(_text(p)) for p in reply[1]], [str(_text(p)) for p in reply[2]])

    def remember_served(
        self, served: Served, ttl: int, decision: dict[EncodableT, EncodableT] | None = None
    ) -> None:
        """:meth:`serve` without the check."""
        self.serve(served, ttl, decision)

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
        """Apply (request id, post id, forum id) events of ``kind`` ('i' or 'c'): one atomic
        step per forum (:data:`APPLY_EVENTS`), all in one round trip.

        Returns per event 0 (already counted), 1 (counted) or 2 (a click that also counted
        its missing impression). The forum's windowed totals count the events that fall in
        ``forum_window``. With the decision log on, every event is also appended to
        the outcome stream in the same round trip (a replay appends it again: readers of the
        stream treat it as a set).
        """
        by_forum: dict[str, list[int]] = {}
        for i, (_, _, forum_id) in enumerate(events):
            by_forum.setdefault(forum_id, []).append(i)
        pipe = self.client.pipeline(transaction=False)
        for forum_id, indices in by_forum.items():
            markers: dict[str, int] = {}
            args: list[EncodableT] = [kind, ttl, self.changes_keep_us, self.forum_window]
            for i in indices:
                request_id, post_id, _ = events[i]
                args += [markers.setdefault(request_id, len(markers) + 1), post_id]
            keys = [self.keys.stats(forum_id), self.keys.changes(forum_id)]
            keys += [self.keys.seen(forum_id, request_id) for request_id in markers]
            self._apply(keys=keys, args=args, client=pipe)
        if self.decision_log_maxlen:
            maxlen = self.decision_log_maxlen * OUTCOMES_PER_DECISION
            for request_id, post_id, _ in events:
                pipe.xadd(self.keys.outcomes, {"r": request_id, "p": post_id, "k": kind},
                          maxlen=maxlen)  # fmt: skip
        results = [0] * len(events)
        replies = pipe.execute()[: len(by_forum)]  # then the outcome stream's entry ids
        for indices, applied in zip(by_forum.values(), replies, strict=True):
            for i, status in zip(indices, applied, strict=True):
                results[i] = int(status)
        return results

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

    # ---- the journal of accepted batches -----------------------------------------------------

    def journal_batch(self, batch_id: str, payload: str, now: float) -> None:
        """Record an accepted batch (``payload``: its task arguments as JSON) until applied."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.pending, batch_id, payload)
        pipe.zadd(self.keys.pending_since, {batch_id: now})
        pipe.execute()

    def forget_batch(self, batch_id: str) -> None:
        """The batch was applied (or can no longer count): drop it from the journal."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.pending, batch_id)
        pipe.zrem(self.keys.pending_since, batch_id)
        pipe.execute()

    def overdue_batches(self, before: float, limit: int) -> list[tuple[str, str | None]]:
        """Up to ``limit`` journalled (batch id, payload), handed to the broker strictly before
        ``before``, oldest first; the payload is None if the batch was forgotten meanwhile."""
        found: Any = self.client.zrangebyscore(
            self.keys.pending_since, "-inf", f"({before!r}", 0, limit
        )
        ids = [i.decode() for i in found]
        if not ids:
            return []
        payloads = self.client.hmget(self.keys.pending, ids)
        return [(i, _text(p)) for i, p in zip(ids, payloads, strict=True)]

    def batch_since(self, batch_id: str) -> float | None:
        """When a journalled batch was last handed to the broker, or None if it is not there."""
        score = self.client.zscore(self.keys.pending_since, batch_id)
        return None if score is None else float(score)

    def batch_requeued(self, batch_id: str, now: float) -> None:
        self.client.zadd(self.keys.pending_since, {batch_id: now}, xx=True)

    def oldest_pending_since(self) -> float | None:
        """When the batch of the journal handed to the broker longest ago was handed over (at
        acceptance, or when the sweeper published it again); None when the journal is empty."""
        oldest: Any = self.client.zrange(self.keys.pending_since, 0, 0, withscores=True)
        return float(oldest[0][1]) if oldest else None

    def journal_size(self) -> int:
        return int(self.client.zcard(self.keys.pending_since))

    def sweep_lock(self, seconds: float) -> redis.lock.Lock:
        """A lock that one worker at a time holds while it sweeps the journal."""
        return self.client.lock(self.keys.pending_lock, timeout=seconds, blocking=False)

    def ping(self) -> bool:
        return bool(self.client.ping())


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a Celery queue of the Redis transport (all its priority lists)."""
    pipe = client.pipeline(transaction=False)
    for step in PRIORITY_STEPS:
        pipe.llen(f"{queue}{RedisChannel.sep}{step}" if step else queue)
    return sum(int(n) for n in pipe.execute())


def oldest_waiting_task(client: redis.Redis, queue: str) -> str | None:
    """The task id of the message that has waited longest in a Celery queue (next to be
    delivered; the Redis transport pushes on the left and pops on the right), or None."""
    raw: Any = client.lindex(queue, -1)
    if raw is None:
        return None
    headers = json.loads(raw).get("headers") or {}
    task_id = headers.get("id")
    return str(task_id) if task_id else None


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value


def _count_fields(posts: Sequence[bytes]) -> list[bytes]:
    """The stats hash fields of the posts: impressions and clicks, alternating."""
    fields = []
    for post in posts:
        fields += [b"i:" + post, b"c:" + post]
    return fields


def _totals(values: list[Any]) -> tuple[int, int]:
    return int(values[0] or 0), int(values[1] or 0)


def _post_states(
    post_ids: list[bytes], expires: Sequence[float | None], counts: list[Any]
) -> PostStates:
    return PostStates(
        post_ids=[p.decode() for p in post_ids],
        expires_at=[math.nan if e is None else float(e) for e in expires],
        impressions=[int(v or 0) for v in counts[0::2]],
        clicks=[int(v or 0) for v in counts[1::2]],
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
