"""What the API does, one function per operation; views only parse, call one of these, shape."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
from kombu.exceptions import OperationalError

from app import decisions
from app.errors import Conflict, NotFound, Unavailable
from app.plans import Arm
from app.runtime import Runtime
from app.schemas import EventBatch, PostIn, RecommendationBody
from app.snapshot_data import Snapshot
from app.variant_arrays import valid
from bandits import Slate, beta_summary, forum_posterior, post_posterior
from core import metrics, queue
from core.experiments.statistics import srm_p_value
from core.queue import QUEUE
from core.storage import ForumRecord, PostConflict, Served, new_request_id
from core.storage.broker import queue_length
from core.storage.catalogue import decode_cursor, encode_cursor
from core.storage.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
# What a failed publish raises: the broker is a Redis, and kombu wraps some of its faults.
_QUEUE_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OperationalError)

# The withdrawals that a snapshot may not know yet: since its read began, with a margin for
# clock differences between web processes.
WITHDRAWN_MARGIN_SECONDS = 5.0


def recommend(rt: Runtime, query: RecommendationBody) -> dict[str, Any]:
    """Choose a slate for a member with the policy of their variant while an experiment
    runs (else the promoted or configured policy); remember it (and log the decision); log
    one line.

    Raises:
        Unavailable: no snapshot could ever be loaded (Redis down since start-up).
    """
    started = time.perf_counter()
    snap = rt.snapshots.get()
    if snap is None:
        metrics.RECOMMENDATIONS.labels(rt.policy.name, "unavailable").inc()
        raise Unavailable("statistics are not available yet; Redis is unreachable")
    now = time.time()
    request_id = new_request_id(query.user_id, now)
    arm = snap.plan.arm(query.user_id) if snap.plan is not None else Arm(rt.policy)
    items, degraded = _serve(rt, snap, arm, query, request_id, now)
    if degraded or not items:  # never written: its events need not wait for it (core.events)
        request_id = new_request_id(query.user_id, now, written=False)
    _count_slate(arm, len(items), degraded)
    body = {"request_id": request_id, "policy": arm.policy.name, "experiment": arm.experiment,
            "variant": arm.variant, "items": items, "degraded": degraded}  # fmt: skip
    _log_slate(body, query, time.perf_counter() - started)
    return body


def _serve(
    rt: Runtime, snap: Snapshot, arm: Arm, query: RecommendationBody, request_id: str, now: float
) -> tuple[list[dict[str, Any]], bool]:
    """Choose a slate once, without the posts to hide from the member, and remember it;
    (items, degraded).

    One round trip before the choice reads the posts the member clicked recently or was shown
    as often as the seen-limit allows, and the fresh withdrawals (the snapshot cannot know
    any); the slate is then handed to this process's writer (app.slate_writer), which writes
    it behind the response (core.storage.serving says what the read cannot see). When the read
    fails, the slate is chosen without them and not remembered: degraded.
    """
    try:
        hidden = _hidden(rt, snap, arm, query.user_id, now)
    except REDIS_ERRORS as exc:
        return _choose(rt, snap, arm, query, [], now)[1], _redis_failed("remember_served", exc)
    slate, items = _choose(rt, snap, arm, query, hidden, now)
    if items:
        _remember(rt, arm, (query.user_id, request_id, now), (slate, items))
    return items, False


def _hidden(rt: Runtime, snap: Snapshot, arm: Arm, user_id: str, now: float) -> list[str]:
    """The posts to choose the member's slate without (one round trip); counts a slate chosen
    while the seen-limit hides a post from the member.

    Raises:
        redis.RedisError: Redis failed.
    """
    found = rt.storage.serving.to_hide(
        user_id, now - rt.settings.reclick_seconds, snap.built_at - WITHDRAWN_MARGIN_SECONDS,
        now if rt.settings.seen_limit else None,
    )  # fmt: skip
    if found.shown:
        metrics.SEEN_LIMITED.labels(arm.policy.name).inc()
    return [*found.clicked, *found.withdrawn, *found.shown]


Choice = tuple[Slate, list[dict[str, Any]]]


def _choose(
    rt: Runtime, snap: Snapshot, arm: Arm, query: RecommendationBody, hidden: list[str], now: float
) -> Choice:
    """The slate of the arm's policy (Snapshot.select) and its items (post, forum, rank)."""
    allowed = None if query.forums is None else snap.forum_indices(query.forums)
    excluded = snap.excluded([*query.exclude, *hidden], now)
    slate = snap.select(
        arm, query.n, rt.rng, allowed_forums=allowed, exclude=excluded,
        per_forum_cap=rt.settings.per_forum_cap or None,
    )  # fmt: skip
    items = [
        {"post_id": post_id, "forum_id": forum_id, "rank": rank}
        for rank, (post_id, forum_id) in enumerate(snap.items(slate.posts), start=1)
    ]
    return slate, items


def _remember(rt: Runtime, arm: Arm, request: tuple[str, str, float], choice: Choice) -> None:
    """Hand a served slate (with its experiment and variant) to the writer, to remember for
    attribution, and for the decision log when that is on; ``request`` is (user id, request
    id, now)."""
    (user_id, request_id, now), (slate, items) = request, choice
    served = Served(request_id, user_id, arm.policy.name,
                    {item["post_id"]: item["forum_id"] for item in items},
                    arm.experiment, arm.variant)  # fmt: skip
    decision = None
    if rt.storage.decisions.maxlen:
        decision = decisions.fields(request_id, now, user_id, slate, items, arm.experiment,
                                    arm.variant)  # fmt: skip
    rt.slates.add((served, rt.settings.event_keep_seconds, decision))


def _log_slate(body: dict[str, Any], query: RecommendationBody, seconds: float) -> None:
    log.info(
        "recommendation",
        extra={
            "request_id": body["request_id"], "user_id": query.user_id, "policy": body["policy"],
            "experiment": body["experiment"], "variant": body["variant"], "n": query.n,
            "items": [item["post_id"] for item in body["items"]],
            "latency_ms": round(seconds * 1000, 3), "degraded": body["degraded"],
        },
    )  # fmt: skip


def _redis_failed(operation: str, exc: Exception) -> bool:
    metrics.redis_failed(log, operation, exc)
    return True


def _count_slate(arm: Arm, size: int, degraded: bool) -> None:
    policy = arm.policy.name
    metrics.RECOMMENDATIONS.labels(policy, "ok" if size else "empty").inc()
    metrics.SLATE_ITEMS.labels(policy).observe(size)
    metrics.EXPERIMENT_SLATES.labels(arm.variant or metrics.NO_VARIANT).inc()
    if degraded:
        metrics.DEGRADED.labels(policy).inc()


def submit_events(rt: Runtime, event_type: str, batch: EventBatch) -> int:
    """Journal a validated batch, then enqueue it for the workers; the count accepted.

    Raises:
        Unavailable: Redis or the broker did not take the batch (nothing was accepted).
    """
    now = time.time()
    events = [[e["request_id"], e["post_id"]] for e in batch.events]
    message = queue.EventBatch(event_type, events, now)
    batch_id = uuid.uuid4().hex
    try:
        rt.storage.journal.add(batch_id, message.to_json(), now)
    except REDIS_ERRORS as exc:
        metrics.redis_failed(log, "journal", exc)
        raise Unavailable("the event journal is unreachable; retry later", retry_after=2) from exc
    try:
        queue.publish(rt.celery, batch_id, message)
    except _QUEUE_ERRORS as exc:
        metrics.redis_failed(log, "enqueue", exc)
        _forget_quietly(rt, batch_id)
        raise Unavailable("the event queue is unreachable; retry later", retry_after=2) from exc
    metrics.EVENTS_RECEIVED.labels(type=event_type).inc(len(message.events))
    log.info("events accepted", extra={"type": event_type, "events": len(message.events)})
    return len(message.events)


def _forget_quietly(rt: Runtime, batch_id: str) -> None:
    """Drop a batch that was not accepted from the journal, if Redis lets us (else the journal
    sweep publishes it later, which is harmless: the caller retries it anyway)."""
    try:
        rt.storage.journal.forget(batch_id)
    except REDIS_ERRORS as exc:
        log.warning("could not drop an unaccepted batch from the journal: %s", exc)


def dependencies(rt: Runtime) -> metrics.Dependencies:
    """Whether Redis (statistics, broker) answers now, the event queue's depth, the age of
    the journal's oldest batch and the running experiment's sample-ratio p-value (/metrics).

    Failures are logged and counted (operation ``probe``), never raised.
    """
    up, depth, age, srm = {}, {}, None, None
    try:
        up["statistics"] = rt.storage.ping()
        since = rt.storage.journal.oldest_since()
        age = 0.0 if since is None else max(0.0, time.time() - since)
        srm = _srm_p_value(rt)
    except REDIS_ERRORS as exc:
        up["statistics"] = not _redis_failed("probe", exc)
    try:
        depth[QUEUE] = queue_length(rt.broker, QUEUE)
        up["broker"] = True
    except REDIS_ERRORS as exc:
        up["broker"] = not _redis_failed("probe", exc)
    return metrics.Dependencies(redis_up=up, queue_depth=depth, oldest_pending_age=age,
                                srm_p_value=srm)  # fmt: skip


def _srm_p_value(rt: Runtime) -> float | None:
    """The running experiment's sample-ratio p-value (two commands), None outside one."""
    state = rt.storage.experiments.serving()
    if state.experiment is None or state.definition is None:
        return None
    variants = state.definition["variants"]
    members = rt.storage.experiment_counts.members(state.experiment, [v["name"] for v in variants])
    return float(srm_p_value(members, [float(v["weight"]) for v in variants]))


def put_post(rt: Runtime, post_id: str, body: PostIn) -> tuple[dict[str, Any], bool]:
    """Register or update a candidate; returns its view and whether it was created.

    An update keeps the post's ``created_at`` and lifetime (``expires_at - created_at``) unless
    ``body`` gives them; a new post is created now and lives ``BANDIT_POST_TTL_SECONDS``. The
    post's current record is read and written in one atomic step (core.storage.catalogue).

    Raises:
        Conflict: the post belongs to another forum or was withdrawn.
    """
    created_at = None if body.created_at is None else body.created_at.timestamp()
    try:
        put = rt.storage.catalogue.register(
            post_id, body.forum_id, time.time(), rt.settings.event_keep_seconds,
            created_at=created_at, lifetime=body.ttl_seconds,
            default_lifetime=rt.settings.post_ttl_seconds,
        )  # fmt: skip
    except PostConflict as exc:
        raise Conflict(str(exc), field="forum_id") from exc
    return get_post(rt, post_id), put.created


def delete_post(rt: Runtime, post_id: str) -> None:
    """Withdraw a post for good; it is excluded from the next request on.

    Raises:
        NotFound: unknown post.
    """
    catalogue = rt.storage.catalogue
    if not catalogue.delete_post(post_id, time.time(), rt.settings.event_keep_seconds):
        raise NotFound(f"post {post_id} is not registered", field="post_id")


def get_post(rt: Runtime, post_id: str) -> dict[str, Any]:
    """A post's counts and posterior.

    Raises:
        NotFound: unknown (or long expired) post.
    """
    record = rt.storage.catalogue.get_post(post_id, time.time())
    if record is None:
        raise NotFound(f"post {post_id} is not registered", field="post_id")
    exact = [(record.impressions, record.clicks), record.forum_policy_counts]
    decayed = None if record.decayed is None else record.decayed.counts
    # With a half-life the policy reads the decayed counts (clicks capped, as in its snapshot).
    post, forum = valid(np.array(exact if decayed is None else decayed)).tolist()
    totals = _global_counts(rt)
    alpha, beta = post_posterior(
        np.array([post[0]]), np.array([post[1]]), np.array([forum[0]]), np.array([forum[1]]),
        totals[0], totals[1], rt.settings.prior_strength,
    )  # fmt: skip
    mean, low, high = beta_summary(alpha, beta, 0.95)
    view = {
        "post_id": record.post_id, "forum_id": record.forum_id,
        "impressions": record.impressions, "clicks": record.clicks,
        "posterior": {"alpha": float(alpha[0]), "beta": float(beta[0]), "mean": float(mean[0]),
                      "interval95": [float(low[0]), float(high[0])]},
        "created_at": record.created_at, "expires_at": record.expires_at,
        "live": not record.deleted and record.expires_at > time.time(),
        "withdrawn": record.deleted, "half_life_seconds": rt.storage.half_life or None,
        "decayed": None if decayed is None else {"impressions": decayed[0][0],
                                                 "clicks": decayed[0][1]},
    }  # fmt: skip
    experiment = _running(rt)
    if experiment is not None:
        counts = rt.storage.experiment_counts.post_counts(record.forum_id, *experiment, post_id)
        view["variants"] = _by_variant(counts)
    return view


def _running(rt: Runtime) -> tuple[str, list[str]] | None:
    """The running experiment's id and variant names, or None."""
    state = rt.storage.experiments.serving()
    if state.experiment is None or state.definition is None:
        return None
    return state.experiment, [v["name"] for v in state.definition["variants"]]


def _by_variant(counts: dict[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    """The ``variants`` breakdown of a post or forum: each variant's slates' counts."""
    return {v: {"impressions": i, "clicks": c} for v, (i, c) in counts.items()}


def _global_counts(rt: Runtime) -> tuple[float, float]:
    """(impressions, clicks) of all forums as the policy takes them: the sums that this
    process's snapshot holds (the ones the policy centres its priors on), summed once per
    refresh. A process that has not loaded a snapshot yet (gunicorn loads one before the first
    request; others with their first slate) reads every active forum instead, rather than load
    a snapshot for a catalogue request."""
    snap, half_life = rt.snapshots.current(), rt.storage.half_life
    if snap is not None:
        cands = snap.candidates
        if half_life and cands.as_of is not None:  # decayed counts: at the snapshot's time
            cands = cands.decayed(half_life)
        return cands.global_impressions, cands.global_clicks
    catalogue = rt.storage.catalogue
    forums = catalogue.get_forums(catalogue.forum_ids(), time.time())
    counts = valid(np.array([_policy_counts(f) for f in forums]))
    return float(counts[:, 0].sum()), float(counts[:, 1].sum())


def _policy_counts(forum: ForumRecord) -> tuple[float, float]:
    """A forum's counts as the policy takes them: decayed ones with a half-life."""
    return forum.policy_counts if forum.decayed is None else forum.decayed.counts[0]


def list_forums(rt: Runtime, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the active forums in id order: ``{"forums", "next_cursor"}`` (None on the
    last page); ``cursor`` is the ``next_cursor`` of the previous page."""
    after = None if cursor is None else decode_cursor(cursor)  # validated by ForumsQuery
    catalogue = rt.storage.catalogue
    page, last = catalogue.forum_page(after, limit)
    views = _forum_views(rt, catalogue.get_forums(page, time.time()))
    return {"forums": views, "next_cursor": None if last is None else encode_cursor(last)}


def get_forum(rt: Runtime, forum_id: str) -> dict[str, Any]:
    """One forum's totals, live post count, and the counts and prior mean the policy takes
    (one round trip); a forgotten forum (no post left) still shows its totals.

    Raises:
        NotFound: unknown forum.
    """
    record = rt.storage.catalogue.get_forum(forum_id, time.time())
    if record is None:
        raise NotFound(f"forum {forum_id} is not registered", field="forum_id")
    (view,) = _forum_views(rt, [record])
    return view


def _forum_views(rt: Runtime, forums: list[ForumRecord]) -> list[dict[str, Any]]:
    """The forums' totals and, beside them, their counts as the policy takes them and the
    resulting prior mean: the mean of the forum's posterior, on which a new post's prior is
    centred (as in :func:`get_post`), shrunk towards the global mean (:func:`_global_counts`)."""
    if not forums:
        return []
    policy = valid(np.array([_policy_counts(f) for f in forums]))
    alpha, beta = forum_posterior(policy[:, 0], policy[:, 1], *_global_counts(rt))
    means = alpha / (alpha + beta)
    views: list[dict[str, Any]] = [
        {
            "forum_id": forum.forum_id,
            "impressions": forum.impressions,
            "clicks": forum.clicks,
            "ctr": forum.clicks / forum.impressions if forum.impressions else None,
            "live_posts": forum.live_posts,
            "policy_counts": {
                "impressions": forum.policy_counts[0] if forum.decayed is None else float(imps),
                "clicks": forum.policy_counts[1] if forum.decayed is None else float(clicks),
                "window": rt.storage.forum_window,
                "half_life_seconds": rt.storage.half_life or None,
            },
            "prior_mean": float(mean),
        }
        for forum, mean, (imps, clicks) in zip(forums, means, policy, strict=True)
    ]
    experiment = _running(rt)
    if experiment is not None:
        for forum, view in zip(forums, views, strict=True):
            counts = rt.storage.experiment_counts.forum_counts(forum.forum_id, *experiment)
            view["variants"] = _by_variant(counts)
    return views
