"""Every Redis key of postbandit, with its hash tag, and the fields of the hashes.

``P`` is the configurable prefix; ``{...}`` are Redis Cluster hash tags. Every multi-key step
(a Lua script) touches the keys of one tag only, so it runs in one hash slot:
a forum's steps under ``{f:F}``, a member's under ``{u:T}`` where T is the member tag
(:func:`core.storage.request_ids.member_tag`, 4 hex digits of a hash of the member id).

==============================  ========  ==================================================
key                             type      content
==============================  ========  ==================================================
``P:forums:active``             zset      forum id -> 0 (read in lexical order) of every forum
                                          with a post not yet pruned; pruning forgets the others
``P:{f:F}:live``                zset      post id -> expiry (unix seconds) of forum F's posts
``P:{f:F}:stats``               hash      ``i:<post>``/``c:<post>`` counts; ``_i``/``_c`` totals;
                                          ``_wi``/``_wc`` windowed totals (core.storage.counting);
                                          with a half-life, decayed counts (floats) and the
                                          time they were decayed to: ``di:<post>``/
                                          ``dc:<post>`` at ``dt:<post>``; ``_di``/``_dc``,
                                          ``_dwi``/``_dwc`` at ``_dt``
``P:{f:F}:changes``             zset      post id -> when its counts or liveness last changed
                                          (Redis clock, microseconds; about the last 10 minutes)
``P:{f:F}:seen:R``              set       ``i:<post>``/``c:<post>`` counted for request R;
                                          ``w:<post>`` its impression counted in ``_wi`` (TTL)
``P:{f:F}:post:ID``             hash      forum_id, created_at, expires_at, deleted (TTL:
                                          expiry + retention; withdrawn: the tombstone's)
``P:{f:F}:gone``                zset      post id -> withdrawal time, until pruned
``P:{p:ID}:forum``              string    the id's tombstone: its forum, as long as any trace
                                          of the post may remain (TTL, see core.storage.catalogue)
``P:{f:F}:outcomes``            stream    forum F's counted events ``r`` request, ``p`` post,
                                          ``k`` kind ``i``/``c`` (capped; the decision log)
``P:withdrawn``                 zset      post id -> withdrawal time, the last hour only
``P:{u:T}:served:R``            hash      slate R served to a member of tag T: ``u`` member,
                                          ``p`` policy, ``x`` experiment and ``v`` variant
                                          (absent outside an experiment), ``#<post>`` -> forum
                                          (TTL)
``P:{u:T}:clicked:U``           zset      post id -> click time for member U of tag T (TTL)
``P:{u:T}:shown:U``             zset      member U's impressions for the seen-limit:
                                          ``<post>#<R's random part>`` -> when slate R was
                                          served, ``<post>`` -> when U last clicked it (the
                                          newest entries of ``BANDIT_SEEN_SECONDS``; TTL;
                                          core.storage.shown)
``P:{u:T}:limited:U``           zset      post id -> until when it stays at member U's
                                          seen-limit (TTL)
``P:{decisions:K}``             stream    served slates for offline evaluation, shard K of
                                          ``DECISION_SHARDS``: the member tag's (capped)
``P:decisions``                 stream    the decision stream of releases before the shards:
                                          read by the readers, no longer written
``P:outcomes:forums``           set       forums whose outcome stream may hold entries
``P:outcomes``                  stream    the outcome stream of releases before the forums'
                                          own: read by the export, no longer written
``P:{pending:K}:batches``       hash      accepted event batch id -> JSON task arguments,
                                          until a worker applied it (the journal), shard K
                                          of ``JOURNAL_SHARDS``: the batch id's
``P:{pending:K}:since``         zset      batch id -> when it was last handed to the broker
``P:{pending}:batches``         hash      the journal of releases before the shards: read,
                                          and moved into the shards, by the sweep; no longer
                                          written
``P:{pending}:since``           zset      its batch id -> when last handed to the broker
``P:{pending}:lock``            string    held by the worker sweeping the journal, every
                                          shard at once (TTL)
``P:{experiments}:serving``     hash      ``experiment`` running ('' none), its
                                          ``definition`` (JSON), ``promoted`` (JSON: experiment,
                                          variant, policy, params; absent: the configured
                                          policy), ``version`` (grows with every change)
``P:{experiments}:experiment:X``  hash    experiment X: ``definition`` (JSON), ``status``
                                          running/stopped, ``started_at``, ``stopped_at``,
                                          ``promoted`` variant ('' none)
``P:{experiments}:history``     zset      experiment id -> start sequence (the last 100; older
                                          records are deleted)
``P:{experiments}:ids``         set       every experiment id ever started (never reused)
``P:{drain}:cursors``           hash      source (``decisions``, ``outcomes``) -> end of the last
                                          slice drained to the decision files (unix ms)
``P:{drain}:lock``              string    held by the worker draining the decision log (TTL)
==============================  ========  ==================================================

The journal and the decision stream are the two keys every event post and every slate write:
each is sharded over a fixed number of tagged keys, so that a cluster spreads them over its
masters (``JOURNAL_SHARDS`` and ``DECISION_SHARDS`` below), and their readers merge the
shards. A batch's shard follows from its id (:func:`journal_shard`): its two keys share the
tag ``{pending:K}``, so the batch enters and leaves both in one transaction in one slot. A
slate's decision goes to its member tag's shard (:func:`decision_shard`), the same for every
slate of a member, so that the slate's removal finds it. Releases before the shards kept one
journal under ``{pending}`` and one stream ``P:decisions``: the readers read those too, and the
sweep moves the old journal's batches into their shards (docs/reliability.md). Changing a
shard count strands what the shards no longer read hold: it needs the same treatment (read
the old layout for one release). Releases before ``{pending}`` kept the journal as
``P:pending`` and ``P:pending:since`` (untagged, two slots): an upgrade from those lets the
old journal drain first.

Experiments (core.storage.experiments) keep every key under the one tag ``{experiments}``:
starting and stopping are single scripts in one slot. What an experiment counts
(core.storage.experiment_counts) lives where it is counted: the events' counts in the forum's
slot, written by the counting step itself (``lua/apply_events.lua``), and the slates and
members in the experiment's own slot ``{xres:X}``, written when a slate is served:

==============================  ========  ==================================================
``P:{f:F}:vstats:X``            hash      forum F's counts of experiment X's slates:
                                          ``V|i:<post>``, ``V|c:<post>``, ``V|_i``, ``V|_c``,
                                          ``V|_wi``, ``V|_wc`` for each variant V, with a
                                          half-life their decayed counterparts (``V|di:<post>``,
                                          ``V|dc:<post>``, ``V|dt:<post>``, ``V|_di``... ``V|_dt``,
                                          as in the stats hash), and the same under ``*|``
                                          summed over the variants (TTL); a
                                          post's fields go when it is pruned, the totals
                                          stay
``P:{f:F}:xres:X``              hash      ``V|B|i``, ``V|B|c``: impressions and clicks of
                                          variant V's members in statistics bucket B (TTL)
``P:{xres:X}:members``          set       members served a slate of experiment X (TTL)
``P:{xres:X}:counts``           hash      ``V|B|s`` slates and ``V|B|m`` distinct members of
                                          variant V in statistics bucket B (TTL)
``P:{xres:X}:forums``           set       forums holding counts of experiment X (TTL);
                                          pruning finds an experiment's counts through it
==============================  ========  ==================================================

Why the served slate is keyed by member: a request reads the member's recently clicked posts
and the posts at their seen-limit before it chooses the slate, and writes the slate after,
each on the member's shard; the worker's seen-limit step writes the clicked and limited keys
in one atomic step, so these keys share the member's tag.
The worker knows only ``(request_id, post_id)`` of an event; the request id carries the tag
(:mod:`core.storage.request_ids`), so the slate's key follows from the request id alone.

Post ids never collide with the slate's own fields: a post field is ``#`` and the post id, and
``#`` is not a character an id may hold (``A-Z a-z 0-9 _ . : -``); ``u``, ``p``, ``x`` and ``v``
do not start with it. In a forum's stats hash every post field holds a ``:`` (``i:<post>``),
the totals none.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from core.storage.request_ids import member_tag, request_tag

# How many shards the journal and the decision stream are spread over: enough for a cluster
# of 16 masters. Fixed: see the docstring before changing one.
JOURNAL_SHARDS = 16
DECISION_SHARDS = 16

# A forum's totals in its stats hash: over every impression, and over each post's first W.
TOTAL_FIELDS = ("_i", "_c")
WINDOW_FIELDS = ("_wi", "_wc")

# The served-slate hash: its member and policy, and one field per post (POST_FIELD + post id).
SERVED_USER = "u"
SERVED_POLICY = "p"
SERVED_EXPERIMENT = "x"
SERVED_VARIANT = "v"

# The pseudo-variant of an experiment's counts summed over its variants (``*|_i``...): no
# variant name can hold ``*`` or ``|``.
ALL_VARIANTS = "*"
POST_FIELD = "#"


def journal_shard(batch_id: str) -> int:
    """The journal shard of a batch (a stable hash of its id: every process agrees)."""
    return zlib.crc32(batch_id.encode()) % JOURNAL_SHARDS


def decision_shard(user_id: str) -> int:
    """The decision stream shard of the slates served to ``user_id`` (by its member tag)."""
    return int(member_tag(user_id), 16) % DECISION_SHARDS


# The decayed forum counts of the stats hash (core.storage.counting): both kinds of totals,
# and the time they were last decayed to.
DECAYED_TOTAL_FIELDS = ("_di", "_dc", "_dt")
DECAYED_WINDOW_FIELDS = ("_dwi", "_dwc", "_dt")


def decayed_policy_fields(forum_window: int) -> tuple[str, str, str]:
    """The decayed counterparts of :func:`policy_fields`, and their time."""
    return DECAYED_WINDOW_FIELDS if forum_window else DECAYED_TOTAL_FIELDS


def policy_fields(forum_window: int) -> tuple[str, str]:
    """The stats hash fields that the policy takes as a forum's (impressions, clicks): the
    windowed totals, or the totals over every impression when ``forum_window`` is 0."""
    return WINDOW_FIELDS if forum_window else TOTAL_FIELDS


@dataclass(frozen=True)
class Keys:
    """Key templates under one prefix.

    Raises:
        ValueError: the prefix holds a brace (it would become the keys' hash tag).
    """

    prefix: str

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"key prefix must not contain braces, got {self.prefix!r}")

    @property
    def forums(self) -> str:
        return f"{self.prefix}:forums:active"

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

    def post(self, forum_id: str, post_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:post:{post_id}"

    def gone(self, forum_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:gone"

    def post_forum(self, post_id: str) -> str:
        return f"{self.prefix}:{{p:{post_id}}}:forum"

    def forum_outcomes(self, forum_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:outcomes"

    def served(self, request_id: str) -> str:
        """The served slate of a request id from :func:`~core.storage.request_ids.new_request_id`.

        Raises:
            ValueError: not such a request id (no slate can have been served under it).
        """
        tag = request_tag(request_id)
        if tag is None:
            raise ValueError(f"not a request id issued by the server: {request_id!r}")
        return f"{self.prefix}:{{u:{tag}}}:served:{request_id}"

    def clicked(self, user_id: str) -> str:
        return f"{self.prefix}:{{u:{member_tag(user_id)}}}:clicked:{user_id}"

    def decisions(self, shard: int) -> str:
        return f"{self.prefix}:{{decisions:{shard}}}"

    def shown(self, user_id: str) -> str:
        return f"{self.prefix}:{{u:{member_tag(user_id)}}}:shown:{user_id}"

    def limited(self, user_id: str) -> str:
        return f"{self.prefix}:{{u:{member_tag(user_id)}}}:limited:{user_id}"

    @property
    def decision_streams(self) -> list[str]:
        """Every decision stream a reader merges: the shards, then the stream of releases
        before them."""
        return [*(self.decisions(k) for k in range(DECISION_SHARDS)), self.legacy_decisions]

    @property
    def legacy_decisions(self) -> str:
        return f"{self.prefix}:decisions"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}:outcomes"

    @property
    def outcome_forums(self) -> str:
        return f"{self.prefix}:outcomes:forums"

    def pending(self, shard: int) -> str:
        return f"{self.prefix}:{{pending:{shard}}}:batches"

    def pending_since(self, shard: int) -> str:
        return f"{self.prefix}:{{pending:{shard}}}:since"

    @property
    def journal_shards(self) -> list[tuple[str, str]]:
        """(batches, since) of every journal shard."""
        return [(self.pending(k), self.pending_since(k)) for k in range(JOURNAL_SHARDS)]

    @property
    def journals(self) -> list[tuple[str, str]]:
        """(batches, since) of every journal shard, then of the journal of releases before the
        shards (the sweep moves its batches into the shards)."""
        return [*self.journal_shards, (self.legacy_pending, self.legacy_pending_since)]

    @property
    def legacy_pending(self) -> str:
        return f"{self.prefix}:{{pending}}:batches"

    @property
    def legacy_pending_since(self) -> str:
        return f"{self.prefix}:{{pending}}:since"

    @property
    def pending_lock(self) -> str:
        return f"{self.prefix}:{{pending}}:lock"

    @property
    def experiment_serving(self) -> str:
        return f"{self.prefix}:{{experiments}}:serving"

    def experiment(self, experiment_id: str) -> str:
        return f"{self.prefix}:{{experiments}}:experiment:{experiment_id}"

    @property
    def experiment_history(self) -> str:
        return f"{self.prefix}:{{experiments}}:history"

    @property
    def experiment_ids(self) -> str:
        return f"{self.prefix}:{{experiments}}:ids"

    def variant_stats(self, forum_id: str, experiment_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:vstats:{experiment_id}"

    def forum_results(self, forum_id: str, experiment_id: str) -> str:
        return f"{self.prefix}:{{f:{forum_id}}}:xres:{experiment_id}"

    def experiment_members(self, experiment_id: str) -> str:
        return f"{self.prefix}:{{xres:{experiment_id}}}:members"

    def experiment_counts(self, experiment_id: str) -> str:
        return f"{self.prefix}:{{xres:{experiment_id}}}:counts"

    def experiment_forums(self, experiment_id: str) -> str:
        return f"{self.prefix}:{{xres:{experiment_id}}}:forums"

    @property
    def drain_cursors(self) -> str:
        return f"{self.prefix}:{{drain}}:cursors"

    @property
    def drain_lock(self) -> str:
        return f"{self.prefix}:{{drain}}:lock"
