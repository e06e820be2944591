"""Served slates and members' clicks: what the request path writes and attribution reads.

A slate is remembered under its member's tag together with the member's clicked posts and
posts at their seen-limit (:mod:`core.storage.shown`), so the check for either and the write
are one atomic step in one hash slot (``lua/serve_slate.lua``).
Withdrawals are global (``P:withdrawn``, another slot): the same
round trip reads the fresh ones, and a slate found holding one is removed again before its
request id is ever given out. The decision-log entry is a command of its own in that round
trip (on the member's shard of the decision stream), removed again with a slate that was not
served (the log is not atomic with the slate: a process that dies in between leaves the entry
of a slate nobody saw).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


def serve_slate_call(
    keys: Keys, served: Served, ttl: int, clicked_since: float | None,
    seen_at: float | None = None,
) -> ScriptCall:  # fmt: skip
    """KEYS/ARGV of ``lua/serve_slate.lua``; ``clicked_since`` None: no check; ``seen_at``
    (now) None: no seen-limit.

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
    since = "" if clicked_since is None else clicked_since
    now = "" if seen_at is None else seen_at
    slate_keys = [keys.served(served.request_id), keys.clicked(served.user_id),
                  keys.limited(served.user_id)]  # fmt: skip
    return ScriptCall(slate_keys, [ttl, since, now, *fields])


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

    def serve(
        self,
        served: Served,
        ttl: int,
        decision: Decision | None = None,
        hide_since: tuple[float, float] | None = None,
        seen_at: float | None = None,
    ) -> RequestContext | None:
        """Remember a served slate for attribution of its events (expires after ``ttl``: the
        attribution window plus the grace, so events accepted late in the window that a worker
        applies after it still find it), and
        append ``decision`` (stream fields) to the decision log when the log is on: one round
        trip.

        With ``hide_since = (clicked since, withdrawn since)`` the slate is checked too: when
        it holds a post that the member clicked or that was withdrawn since then, or, with
        ``seen_at`` (now) too, a post at the member's seen-limit then
        (:mod:`core.storage.shown`), nothing is kept (a second round trip removes what was
        written after a withdrawal) and the member's recently clicked, the recently withdrawn
        and the posts at the seen-limit are returned, to choose again. None when the slate
        was remembered.

        Raises:
            ValueError: the request id was not issued for this member.
            redis.RedisError: Redis failed.
        """
        clicked_since = None if hide_since is None else hide_since[0]
        seen_at = None if hide_since is None else seen_at  # only a checked slate is refused
        call = serve_slate_call(self.keys, served, ttl, clicked_since, seen_at)
        arm = slate_arm(served)
        pipe = batch(self.client)
        if hide_since is not None:
            pipe.zrangebyscore(self.keys.withdrawn, hide_since[1], "+inf")
        run(self.scripts.serve_slate, call, pipe)
        if arm is not None:
            self.counts.queue_slate(pipe, arm, served.user_id, ttl + EXPERIMENT_RETENTION_SECONDS)
        logged = decision is not None and self.log.queue_decision(pipe, served.user_id, decision)
        replies = pipe.execute()
        withdrawn = [str(text(p)) for p in replies.pop(0)] if hide_since is not None else []
        written, *refused = replies[0]
        if written and not set(withdrawn) & served.forums.keys():
            return None
        assert hide_since is not None  # an unchecked slate is always written and kept
        entry = replies[-1] if logged else None
        found = self._unserve(served, hide_since[0], entry, ttl)
        if not refused:
            return RequestContext(found, withdrawn)
        clicked, shown = ([str(text(p)) for p in posts] for posts in refused)
        return RequestContext(clicked, withdrawn, shown)

    def _unserve(self, served: Served, clicked_since: float, entry_id: Any, ttl: int) -> list[str]:
        """Remove a slate that will not be served, its decision-log entry if any and its count
        in its experiment; the member's posts clicked since ``clicked_since``."""
        pipe = batch(self.client)
        pipe.zrangebyscore(self.keys.clicked(served.user_id), clicked_since, "+inf")
        pipe.delete(self.keys.served(served.request_id))
        if entry_id is not None:
            self.log.queue_removal(pipe, served.user_id, entry_id)
        arm = slate_arm(served)
        if arm is not None:
            retention = ttl + EXPERIMENT_RETENTION_SECONDS
            self.counts.queue_slate(pipe, arm, served.user_id, retention, slates=-1)
        return [str(text(p)) for p in pipe.execute()[0]]

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
