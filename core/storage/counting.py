"""Counting events into each forum's statistics, and forgetting long-expired posts.

Counts only ever change through ``lua/apply_events.lua``, which marks each event as seen and
increments the post and forum counters in one atomic step per forum (all its keys under the
forum's tag); a marker that is already present makes the event a no-op, so retries and
redelivered tasks never count twice. The same step notes the changed posts in the forum's
change log, which the snapshots read.

The windowed forum totals count each post over its first W impressions only (W is the forum
window, ``BANDIT_FORUM_WINDOW``): an impression counts in ``_wi`` when, counted, its post has
at most W impressions, and a click counts in ``_wc`` when its impression counted in ``_wi``.
Every post gets its first impressions whatever its CTR, so these totals estimate a typical
post of the forum, where ``_i``/``_c`` lean towards the posts the policy already favours; the
policy takes them as the forum's counts (:func:`core.storage.keys.policy_fields`). With W = 0
they are not written and the policy takes ``_i``/``_c``. A forum hash without them (written
before they existed, or while W was 0) reads as 0 impressions and 0 clicks: the forum's prior
is then the global one until impressions within the window are counted again (a post that
already had W impressions adds none). Changing W applies to the events counted from then on.

With a half-life h (``BANDIT_HALF_LIFE_SECONDS``) the same step keeps decayed counters beside
the exact ones (``lua/decayed.lua``): per post ``di:``/``dc:`` and their time ``dt:``, per
forum ``_di``/``_dc``, ``_dwi``/``_dwc`` (windowed as above) and their time ``_dt``, and the
same under each variant in an experiment's counts. A counter holds sum_i 2^(-(t - t_i)/h) over
its events at its time t, where t_i is when the API accepted the event's batch (not when a
worker applied it: a backlog does not make old events fresh); a reader decays it to its own
time. Only events that count add to them, so the de-dup markers guard them as they guard the
exact counts. They are kept only while a half-life is set: a counter's value depends on h.
The time is an argument rather than the server's clock (``TIME`` in the script), which would
stamp an event when a worker applies it: a backlog, or the journal's resend after an outage,
would make hours-old events count as fresh. The attribution already judges an event by its
acceptance; the worker caps it at its own clock (core.events). The script's writes are then
a function of its arguments (on the Redis 6.2 in use, scripts replicate their effects, so
``TIME`` followed by writes is allowed too: ``note_changes.lua`` relies on it).

Posts whose attribution window closed after they expired or were withdrawn leave the forum's
live (or withdrawn) set and statistics (``lua/prune_expired.lua``, run by the workers every
minute), so those keys hold recent posts only; the forum totals, windowed ones too, keep their
counts. The same step takes the post's fields out of the counts of each experiment that counted
in the forum (``vstats:X``: the experiments the caller names, found through the forums each
lists), whose variant totals keep them likewise. A forum left with no post is forgotten: it
leaves ``P:forums:active``, which the snapshots and pruning iterate, and its stats hash stays
as history.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import redis
from redis.typing import EncodableT

from core.storage.catalogue import forum_ids
from core.storage.decision_log import DecisionLog
from core.storage.keys import Keys
from core.storage.records import SlateArm, text
from core.storage.scripts import ScriptCall, Scripts, batch, run

Event = tuple[str, str, str]  # (request id, post id, forum id)
Decay = tuple[float, int]  # (the events' time in unix seconds, the half-life in seconds)

# An experiment's counts outlive their last write by this much (and by the markers' ttl):
# the last events of its slates arrive up to the attribution window plus the grace after its
# stop, and its results stay readable for a month after that.
EXPERIMENT_RETENTION_SECONDS = 30 * 86400


def apply_events_call(
    keys: Keys, kind: str, forum_id: str, events: Sequence[Event], ttl: int, keep_us: int,
    window: int, outcome_cap: int = 0, arms: Mapping[str, SlateArm] | None = None,
    decay: Decay = (0.0, 0),
) -> ScriptCall:  # fmt: skip
    """KEYS/ARGV of ``lua/apply_events.lua`` for the events of one forum (``forum_id``);
    ``outcome_cap`` is the cap of its outcome stream (0: no decision log); ``arms`` the
    experiment arm of each request id whose slate an experiment served; ``decay`` the
    events' time and the half-life of the decayed counters (0: none kept)."""
    arms = arms or {}
    markers: dict[str, int] = {}
    pairs: list[EncodableT] = []
    for request_id, post_id, _ in events:
        pairs += [markers.setdefault(request_id, len(markers) + 1), post_id]
    experiments = list(dict.fromkeys(arms[r].experiment for r in markers if r in arms))
    per_marker: list[EncodableT] = []
    for request_id in markers:
        arm = arms.get(request_id)
        index = 0 if arm is None else experiments.index(arm.experiment) + 1
        per_marker += [request_id, index, arm.variant if arm else "", arm.bucket if arm else 0]
    event_keys = [keys.stats(forum_id), keys.changes(forum_id), keys.forum_outcomes(forum_id)]
    for experiment in experiments:
        event_keys += [keys.variant_stats(forum_id, experiment),
                       keys.forum_results(forum_id, experiment)]  # fmt: skip
    return ScriptCall(
        event_keys + [keys.seen(forum_id, r) for r in markers],
        [kind, ttl, keep_us, window, outcome_cap, len(experiments),
         ttl + EXPERIMENT_RETENTION_SECONDS, repr(float(decay[0])), decay[1], *per_marker,
         *pairs],
    )  # fmt: skip


def prune_expired_call(
    keys: Keys, forum_id: str, before: float, limit: int,
    experiments: Mapping[str, Sequence[str]] | None = None,
) -> ScriptCall:  # fmt: skip
    """KEYS/ARGV of ``lua/prune_expired.lua`` for one forum; ``experiments`` maps each
    experiment whose counts the forum may hold to its variant names."""
    experiments = experiments or {}
    forum_keys = [keys.live(forum_id), keys.stats(forum_id), keys.gone(forum_id),
                  keys.changes(forum_id)]  # fmt: skip
    forum_keys += [keys.variant_stats(forum_id, x) for x in experiments]
    return ScriptCall(forum_keys, [before, limit, *("|".join(v) for v in experiments.values())])


class Counting:
    """``forum_window`` is W of the windowed forum totals (0: none); ``half_life`` the
    half-life of the decayed counters, in seconds (0: none kept)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, log: DecisionLog,
        forum_window: int, keep_us: int, half_life: int = 0,
    ) -> None:  # fmt: skip
        self.half_life = half_life
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.log = log
        self.forum_window = forum_window
        self.keep_us = keep_us

    def apply_events(
        self, kind: str, events: Sequence[Event], ttl: int,
        arms: Mapping[str, SlateArm] | None = None, at: float | None = None,
    ) -> list[int]:  # fmt: skip
        """Apply (request id, post id, forum id) events of ``kind`` ('i' or 'c'): one atomic
        step per forum, all in one round trip; seen-markers expire after ``ttl`` seconds.
        With a half-life, the events count in the decayed counters at time ``at`` (unix
        seconds; default now), in the same step.
        ``arms`` holds the experiment arm of the requests whose slate an experiment served:
        their events count under their variant too, in the same step, and their forum joins
        the experiment's forums (core.storage.experiment_counts).

        Returns per event 0 (already counted), 1 (counted) or 2 (a click that also counted
        its missing impression). With the decision log on, each event that counts, and only
        it, is appended to its forum's outcome stream in the same atomic step.
        """
        arms = arms or {}
        decay = (time.time() if at is None else at, self.half_life)
        by_forum: dict[str, list[int]] = {}
        for i, (_, _, forum_id) in enumerate(events):
            by_forum.setdefault(forum_id, []).append(i)
        pipe = batch(self.client)
        # Before the steps, so that a forum's outcomes and results are always found; all
        # queued first, so that a cluster runs the batch in two steps, not two per forum.
        self._queue_forums(pipe, by_forum, events, arms, ttl)
        first_step = len(pipe)
        for forum_id, indices in by_forum.items():
            call = apply_events_call(
                self.keys, kind, forum_id, [events[i] for i in indices], ttl, self.keep_us,
                self.forum_window, self.log.outcome_cap, arms, decay,
            )  # fmt: skip
            run(self.scripts.apply_events, call, pipe)
        replies = pipe.execute()[first_step:]
        results = [0] * len(events)
        for indices, reply in zip(by_forum.values(), replies, strict=True):
            for i, status in zip(indices, reply, strict=True):
                results[i] = int(status)
        return results

    def _queue_forums(
        self, pipe: redis.client.Pipeline, by_forum: Mapping[str, Sequence[int]],
        events: Sequence[Event], arms: Mapping[str, SlateArm], ttl: int,
    ) -> None:  # fmt: skip
        """Note the forums in the decision log's set of outcome streams (one SADD), and in
        the forums of each experiment whose slates the events are from."""
        if self.log.outcome_cap > 0 and by_forum:
            self.log.queue_forums(pipe, list(by_forum))
        hosts: dict[str, set[str]] = {}
        for request_id, _, forum_id in events:
            if request_id in arms:
                hosts.setdefault(arms[request_id].experiment, set()).add(forum_id)
        for experiment in sorted(hosts):
            key = self.keys.experiment_forums(experiment)
            pipe.sadd(key, *sorted(hosts[experiment]))
            pipe.expire(key, ttl + EXPERIMENT_RETENTION_SECONDS)

    def prune_expired(
        self, before: float, limit: int = 1000,
        experiments: Mapping[str, Sequence[str]] | None = None,
    ) -> int:  # fmt: skip
        """Forget posts that expired or were withdrawn before ``before`` (at most ``limit`` of
        each a forum): they leave their forum's live or withdrawn set and statistics, and the
        post counts of each of ``experiments`` (experiment id -> variant names) that counted
        in the forum, atomically per forum; then forget the forums left with no post. How many
        posts were forgotten.

        Without this, every post ever registered would stay in those keys for good.
        """
        forums = forum_ids(self.client, self.keys)
        hosted = self._experiments_by_forum(experiments or {})
        pipe = batch(self.client)
        for forum_id in forums:
            call = prune_expired_call(self.keys, forum_id, before, limit, hosted.get(forum_id))
            run(self.scripts.prune_expired, call, pipe)
        replies = pipe.execute()
        self._forget_forums([f for f, (_, idle) in zip(forums, replies, strict=True) if idle])
        return sum(int(pruned) for pruned, _ in replies)

    def _experiments_by_forum(
        self, experiments: Mapping[str, Sequence[str]]
    ) -> dict[str, dict[str, Sequence[str]]]:
        """forum -> {experiment -> variants} of the experiments whose counts it holds: the
        forums each lists (``{xres:X}:forums``, added before each of its counting steps and
        kept as long as its counts), read in one round trip."""
        if not experiments:
            return {}
        pipe = batch(self.client)
        for experiment in experiments:
            pipe.smembers(self.keys.experiment_forums(experiment))
        hosted: dict[str, dict[str, Sequence[str]]] = {}
        for (experiment, variants), forums in zip(experiments.items(), pipe.execute(),
                                                  strict=True):  # fmt: skip
            for forum in forums:
                hosted.setdefault(str(text(forum)), {})[experiment] = variants
        return hosted

    def _forget_forums(self, forums: Sequence[str]) -> None:
        """Take forums found with no post out of the active set, then put back any that a
        registration or withdrawal filled meanwhile (each adds its forum after its step, so
        either it adds it after this removal, or this check sees its post)."""
        if not forums:
            return
        self.client.zrem(self.keys.forums, *forums)
        pipe = batch(self.client)
        for forum_id in forums:
            pipe.exists(self.keys.live(forum_id), self.keys.gone(forum_id))
        back = {f: 0 for f, posts in zip(forums, pipe.execute(), strict=True) if posts}
        if back:
            self.client.zadd(self.keys.forums, back)
