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
                                          ``_wi``/``_wc`` windowed totals (core.storage.counting)
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
``P:decisions``                 stream    served slates for offline evaluation (capped)
``P:outcomes:forums``           set       forums whose outcome stream may hold entries
``P:outcomes``                  stream    the outcome stream of releases before the forums'
                                          own: read by the export, no longer written
``P:{pending}:batches``         hash      accepted event batch id -> JSON task arguments,
                                          until a worker applied it (the journal)
``P:{pending}:since``           zset      batch id -> when it was last handed to the broker
``P:{pending}:lock``            string    held by the worker sweeping the journal (TTL)
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

The journal's keys share the tag ``{pending}``, so that a batch enters and leaves both in one
transaction in one slot. Releases before it kept them as ``P:pending`` and ``P:pending:since``
(untagged, two slots): an upgrade lets the old journal drain first (docs/reliability.md).

Experiments (core.storage.experiments) keep every key under the one tag ``{experiments}``:
starting and stopping are single scripts in one slot. What an experiment counts
(core.storage.experiment_counts) lives where it is counted: the events' counts in the forum's
slot, written by the counting step itself (``lua/apply_events.lua``), and the slates and
members in the experiment's own slot ``{xres:X}``, written when a slate is served:

==============================  ========  ==================================================
``P:{f:F}:vstats:X``            hash      forum F's counts of experiment X's slates:
                                          ``V|i:<post>``, ``V|c:<post>``, ``V|_i``, ``V|_c``,
                                          ``V|_wi``, ``V|_wc`` for each variant V, and the
                                          same under ``*|`` summed over the variants (TTL);
                                          a post's fields go when it is pruned, the totals
                                          stay
``P:{f:F}:xres:X``              hash      ``V|B|i``, ``V|B|c``: impressions and clicks of
                                          variant V's members in statistics bucket B (TTL)
``P:{xres:X}:members``          set       members served a slate of experiment X (TTL)
``P:{xres:X}:counts``           hash      ``V|B|s`` slates and ``V|B|m`` distinct members of
                                          variant V in statistics bucket B (TTL)
``P:{xres:X}:forums``           set       forums holding counts of experiment X (TTL);
                                          pruning finds an experiment's counts through it
==============================  ========  ==================================================

Why the served slate is keyed by member: serving checks the slate against the member's
recently clicked posts and writes it in one atomic step, so both keys share the member's tag.
The worker knows only ``(request_id, post_id)`` of an event; the request id carries the tag
(:mod:`core.storage.request_ids`), so the slate's key follows from the request id alone.

Post ids never collide with the slate's own fields: a post field is ``#`` and the post id, and
``#`` is not a character an id may hold (``A-Z a-z 0-9 _ . : -``); ``u``, ``p``, ``x`` and ``v``
do not start with it. In a forum's stats hash every post field holds a ``:`` (``i:<post>``),
the totals none.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.storage.request_ids import member_tag, request_tag

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

    @property
    def decisions(self) -> str:
        return f"{self.prefix}:decisions"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}:outcomes"

    @property
    def outcome_forums(self) -> str:
        return f"{self.prefix}:outcomes:forums"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:{{pending}}:batches"

    @property
    def pending_since(self) -> str:
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
