"""Served slates and members' clicks: what the request path reads and writes and attribution reads.

A slate is chosen once, without the member's posts to hide: :meth:`Serving.to_hide` reads them
in one round trip before the choice (the member's posts clicked recently and at their
seen-limit, :mod:`core.storage.shown`, under the member's tag; the fresh withdrawals,
``P:withdrawn``, global), and :attr:`Serving.steps` later remember the slate (with its
decision-log entry and experiment count), batched with others behind the responses
(app.slate_writer). Nothing is checked at the write: a click,
an impression at the seen-limit or a withdrawal that lands between the read and the response
(microseconds, plus however far the workers already lag behind the events) is not seen by
that request, as one landing just after the response is not; the next request sees it.
(Until this change the write checked the slate in the same Lua step and, finding a post to
hide, removed what it had written and the slate was chosen again.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import redis
from redis.typing import EncodableT

from core.experiments.assignment import member_bucket
from core.storage.counting import EXPERIMENT_RETENTION_SECONDS
from core.storage.decision_log import DecisionLog
from core.storage.experiment_counts import ExperimentCounts
from core.storage.keys import (
    POST_FIELD,
    SERVED_EXPERIMENT,
    SERVED_POLICY,
    SERVED_USER,
    SERVED_VARIANT,
    Keys,
)
from core.storage.records import RequestContext, Served, SlateArm, text
from core.storage.request_ids import member_tag, request_tag
from core.storage.scripts import ScriptCall, Scripts, batch, run

Decision = Mapping[EncodableT, EncodableT]
# A slate to remember: the slate, how long (seconds), its decision-log entry (None: no log).
ToServe = tuple[Served, int, Decision | None]
# One step of writing slates (:attr:`Serving.steps`).
WriteStep = Callable[[Sequence[ToServe]], None]


def serve_slate_call(keys: Keys, served: Served, ttl: int) -> ScriptCall:
    """KEYS/ARGV of ``lua/serve_slate.lua``.

    Raises:
        ValueError: the request id was not issued for this member (its tag differs).
    """
    if request_tag(served.request_id) != member_tag(served.user_id):
        raise ValueError(f"request id {served.request_id!r} was not issued to this member")
    fields: list[EncodableT] = [SERVED_USER, served.user_id, SERVED_POLICY, served.policy]
    if served.experiment is not None and served.variant is not None:
        fields += [SERVED_EXPERIMENT, served.experiment, SERVED_VARIANT, served.variant]
    for post_id, forum_id in served.forums.items():
        fields += [POST_FIELD + post_id, forum_id]
    return ScriptCall([keys.served(served.request_id)], [ttl, *fields])


def slate_arm(served: Served) -> SlateArm | None:
    """The experiment arm of a slate, with its member's statistics bucket; None outside an
    experiment."""
    if served.experiment is None or served.variant is None:
        return None
    bucket = member_bucket(served.experiment, served.user_id)
    return SlateArm(served.experiment, served.variant, bucket)


class Serving:
    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, log: DecisionLog,
        counts: ExperimentCounts,
    ) -> None:  # fmt: skip
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.log = log
        self.counts = counts

    def to_hide(
        self, user_id: str, clicked_since: float, withdrawn_since: float,
        seen_at: float | None = None,
    ) -> RequestContext:  # fmt: skip
        """The posts to hide from ``user_id``'s next slate, in one round trip: the ones they
        clicked since ``clicked_since``, the ones withdrawn since ``withdrawn_since`` and, with
        ``seen_at`` (now; None: no seen-limit), the ones at their seen-limit then. Read only.

        Raises:
            redis.RedisError: Redis failed.
        """
        pipe = batch(self.client)
        pipe.zrangebyscore(self.keys.withdrawn, withdrawn_since, "+inf")
        pipe.zrangebyscore(self.keys.clicked(user_id), clicked_since, "+inf")
        if seen_at is not None:
            pipe.zrangebyscore(self.keys.limited(user_id), seen_at, "+inf")
        withdrawn, clicked, *limited = ([str(text(p)) for p in r] for r in pipe.execute())
        return RequestContext(clicked, withdrawn, limited[0] if limited else [])

    def serve(self, served: Served, ttl: int, decision: Decision | None = None) -> None:
        """Remember a served slate for attribution of its events (expires after ``ttl``: the
        attribution window plus the grace, so events accepted late in the window that a worker
        applies after it still find it), count it in its experiment, and append ``decision``
        (stream fields) to the decision log when the log is on: a round trip per
        :attr:`steps` that has something to write, not atomic (a process that dies in it may
        leave some of these without the others).

        Raises:
            ValueError: the request id was not issued for this member.
            redis.RedisError: Redis failed.
        """
        self.serve_many([(served, ttl, decision)])

    def serve_many(self, slates: Sequence[ToServe]) -> None:
        """:meth:`serve` for many slates: the :attr:`steps` in turn (one round trip each).

        Raises:
            ValueError: a request id was not issued for its member (nothing was sent).
            redis.RedisError: Redis failed (see :attr:`steps`).
        """
        for step in self.steps:
            step(slates)

    @property
    def steps(self) -> tuple[WriteStep, ...]:
        """How slates are written, one non-transactional batch per step, in this order: the
        slates (written again, the same), their decision-log entries, their experiment counts.

        A step that fails raises a Redis error after it may have written part of its batch;
        writing on from that step does not repeat the steps before it. So a batch that fails
        partway, such as on a Redis Cluster one of whose masters is down, is written again
        from the failed step: a slate's experiment count is never repeated because another
        slate's slot, or a decision-log shard, was down (only a reply lost after the counts
        step ran counts them again, once per such loss); decision-log entries written on the
        masters that answered are written again, the same entries (their request ids tell
        them apart).
        """
        return (self.remember_many, self.log_many, self.count_many)

    def remember_many(self, slates: Sequence[ToServe]) -> None:
        """Remember the slates for attribution (idempotent: a slate written twice is the same).

        Raises:
            ValueError: a request id was not issued for its member (nothing was sent).
            redis.RedisError: Redis failed (some may have been written).
        """
        calls = [serve_slate_call(self.keys, served, ttl) for served, ttl, _ in slates]
        pipe = batch(self.client)
        for call in calls:
            run(self.scripts.serve_slate, call, pipe)
        pipe.execute()

    def log_many(self, slates: Sequence[ToServe]) -> None:
        """Append the slates' decisions to the decision log (those that have one).

        Raises:
            redis.RedisError: Redis failed (some may have been appended; again, twice).
        """
        pipe = batch(self.client)
        for served, _, decision in slates:
            if decision is not None:
                self.log.queue_decision(pipe, served.user_id, decision)
        if len(pipe):
            pipe.execute()

    def count_many(self, slates: Sequence[ToServe]) -> None:
        """Count the slates served in an experiment, and their members once (one slot per
        experiment: a batch of one experiment's slates runs on one node).

        Raises:
            redis.RedisError: Redis failed (some may have been counted; again, twice).
        """
        pipe = batch(self.client)
        for served, ttl, _ in slates:
            arm = slate_arm(served)
            if arm is not None:
                retention = ttl + EXPERIMENT_RETENTION_SECONDS
                self.counts.queue_slate(pipe, arm, served.user_id, retention)
        if len(pipe):
            pipe.execute()

    def lookup(self, request_ids: Iterable[str]) -> dict[str, Served]:
        """The served slates among ``request_ids`` that are still remembered (ids the server
        did not issue are never found)."""
        unique = [r for r in dict.fromkeys(request_ids) if request_tag(r) is not None]
        pipe = batch(self.client)
        for request_id in unique:
            pipe.hgetall(self.keys.served(request_id))
        found = {}
        for request_id, raw in zip(unique, pipe.execute(), strict=True):
            if raw:
                found[request_id] = _served(request_id, raw)
        return found

    def remember_clicks(self, clicks: Sequence[tuple[str, str]], now: float, window: int) -> None:
        """Record (user id, post id) clicks so the posts are not recommended again in ``window``."""
        by_member: dict[str, dict[str, float]] = {}
        for user_id, post_id in clicks:
            by_member.setdefault(user_id, {})[post_id] = now
        pipe = batch(self.client)
        for user_id, posts in by_member.items():
            key = self.keys.clicked(user_id)
            pipe.zadd(key, posts)
            pipe.zremrangebyscore(key, "-inf", now - window)
            pipe.expire(key, window)
        pipe.execute()


def _served(request_id: str, raw: dict[bytes, bytes]) -> Served:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    forums = {
        name.removeprefix(POST_FIELD): forum
        for name, forum in fields.items()
        if name.startswith(POST_FIELD)
    }
    return Served(
        request_id, fields.get(SERVED_USER, ""), fields.get(SERVED_POLICY, ""), forums,
        fields.get(SERVED_EXPERIMENT), fields.get(SERVED_VARIANT),
    )  # fmt: skip
