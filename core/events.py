"""How impression and click events are attributed and counted (run by the workers).

An event counts only when its (request_id, post_id) was served and the event was accepted (its
batch answered 202, ``received_at``) within the attribution window of the slate, and at most
once per (request_id, post_id, type). It is judged by when it was accepted, not when a worker
applies it: the served slate and the de-dup markers are kept for the window plus a grace
(``BANDIT_EVENT_GRACE_SECONDS``), so queue lag up to the grace changes nothing. Past the
window plus the grace it can no longer count (``expired``): the slate may be gone, and its
markers with it, so counting it could count it twice. A click whose impression has not been
counted counts that impression too, so clicks never exceed impressions for any post or forum.

A web process writes the slates it served behind its responses, within milliseconds
(app.slate_writer), so an event may reach a worker before its slate: an event whose slate
is not found but whose request id was issued, and which was accepted, less than
``SLATE_WAIT_SECONDS`` ago is left waiting (:attr:`Outcome.waiting`) for the task to apply
again later, not counted ``unknown_request``; past that bound it is. A slate that is never
written (served degraded, or empty) says so in its request id
(:func:`core.storage.request_ids.never_written`): its events count ``unknown_request`` at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.storage import Served, SlateArm, Storage, request_time
from core.storage.request_ids import never_written
from core.storage.serving import slate_arm

# The event types of the API, and the one-letter kind each is stored as.
EVENT_TYPES = ("impression", "click")
KINDS = dict(zip(EVENT_TYPES, ("i", "c"), strict=True))

# Outcomes of one event, used as the bounded ``result`` label of the applied-events metric.
COUNTED = "counted"
DUPLICATE = "duplicate"
UNKNOWN_REQUEST = "unknown_request"
NOT_SERVED = "not_served"
EXPIRED = "expired"
RESULTS = (COUNTED, DUPLICATE, UNKNOWN_REQUEST, NOT_SERVED, EXPIRED)

# How long after its request id was issued an event waits for its slate to be written: far
# beyond a web process's flush interval and its retries of a failed write (a slate of a web
# process killed before its flush is never written; its events end unknown_request then).
SLATE_WAIT_SECONDS = 30.0


# The variant of slates served outside an experiment (the metrics' label; no variant may be
# called so).
NO_VARIANT = "none"


@dataclass(frozen=True)
class Outcome:
    """What one batch did: counts by result, counted events by the policy that served them,
    and counted impressions and clicks by (variant or ``none``, event type); ``waiting``: the
    events whose slate is not written yet (in no count), to apply again later."""

    results: Counter[str]
    by_policy: Counter[str]
    implied_impressions: Counter[str]
    by_variant: Counter[tuple[str, str]] = field(default_factory=Counter)
    waiting: list[list[str]] = field(default_factory=list)


# De-dup markers outlive the last moment their event may be applied by this much, for the
# clocks of the web process (request ids), the worker and Redis (TTLs) to differ.
MARKER_MARGIN_SECONDS = 300


@dataclass(frozen=True)
class Window:
    """When events count: accepted within ``seconds`` of their slate being served, and
    applied within ``seconds + grace``."""

    seconds: int
    grace: int

    @property
    def keep(self) -> int:
        """How long a served slate is kept (from serving), and what its events need."""
        return self.seconds + self.grace


def classify(
    request_id: str, post_id: str, served: Served | None, accepted_at: float, now: float,
    window: Window,
) -> str | None:  # fmt: skip
    """Why an event accepted at ``accepted_at`` and applied at ``now`` cannot count, or None
    when it is attributable."""
    issued = request_time(request_id)
    if issued is not None and (accepted_at - issued > window.seconds or now - issued > window.keep):
        return EXPIRED
    if served is None:
        return UNKNOWN_REQUEST
    if post_id not in served.forums:
        return NOT_SERVED
    return None


def apply_batch(
    storage: Storage,
    event_type: str,
    events: Sequence[Sequence[str]],
    now: float,
    window: int,
    reclick_window: int,
    *,
    accepted_at: float | None = None,
    grace: int = 0,
    seen_limit: tuple[int, int] | None = None,
    wait: float = 0.0,
) -> Outcome:
    """Apply a batch of ``(request_id, post_id)`` events of one type, idempotently, at ``now``.

    The batch was accepted at ``accepted_at`` (default ``now``); its events count when that
    was within ``window`` seconds of their slate being served and ``now`` within ``window +
    grace``, where ``window + grace`` must be no longer than served slates are kept. De-dup
    markers are kept longer than that, so no event can count twice.

    With ``seen_limit`` (``BANDIT_SEEN_SECONDS``, ``BANDIT_SEEN_LIMIT``; None: off), the
    attributable events are also recorded for the members' seen-limit
    (:mod:`core.storage.shown`), duplicates too: the record is idempotent, and a retry after a
    crash between the steps still makes it.

    An event whose slate is not found, whose request id was issued less than ``wait``
    seconds from ``now`` and which was accepted less than ``wait`` seconds before ``now`` is
    left in :attr:`Outcome.waiting` (its slate may not be written yet), counted nowhere.

    Raises:
        ValueError: unknown ``event_type``.
        redis.RedisError: Redis failed; nothing is lost, the task is retried and
            re-application is a no-op for the events already counted.
    """
    kind = KINDS.get(event_type)
    if kind is None:
        raise ValueError(f"event_type must be one of {sorted(KINDS)}, got {event_type!r}")
    limits = Window(window, grace)
    accepted = now if accepted_at is None else accepted_at
    served = storage.serving.lookup(request_id for request_id, _ in events)
    results: Counter[str] = Counter()
    todo: list[tuple[str, str, str]] = []
    waiting: list[list[str]] = []
    for request_id, post_id in events:
        record = served.get(request_id)
        reason = classify(request_id, post_id, record, accepted, now, limits)
        if reason == UNKNOWN_REQUEST and _young(request_id, accepted, now, wait):
            waiting.append([request_id, post_id])
        elif reason is not None:
            results[reason] += 1
        else:
            assert record is not None
            todo.append((request_id, post_id, record.forums[post_id]))
    arms = _arms(served, todo)
    ttl = limits.keep + MARKER_MARGIN_SECONDS
    # Decayed counts take the event at its acceptance, never ahead of this worker's clock: a
    # web host whose clock runs ahead would otherwise push every counter it touches into
    # the future, where the other hosts' events would weigh almost nothing.
    applied = storage.counting.apply_events(kind, todo, ttl, arms, at=min(accepted, now))
    outcome = _outcome(kind, todo, applied, served, results, waiting)
    _remember(storage, kind, todo, served, (accepted, now), (seen_limit, reclick_window))
    return outcome


def _young(request_id: str, accepted: float, now: float, wait: float) -> bool:
    """Whether an event of ``request_id``, accepted at ``accepted``, may still wait for its
    slate at ``now``: its id was issued less than ``wait`` seconds from ``now`` (either way),
    and the event accepted less than ``wait`` seconds ago. Its slate was handed to the writer
    before the response that gave the id out, so before the event was accepted: an id ahead
    of ``now`` (a web host's clock ahead, or an id a client made up) waits no longer either.
    An id whose slate is never written (served degraded, or empty) does not wait at all."""
    issued = request_time(request_id)
    if wait <= 0 or issued is None or never_written(request_id):
        return False
    return abs(now - issued) < wait and now - accepted < wait


def _remember(
    storage: Storage, kind: str, todo: list[tuple[str, str, str]], served: dict[str, Served],
    times: tuple[float, float], limits: tuple[tuple[int, int] | None, int],
) -> None:  # fmt: skip
    """Record the attributable events for the seen-limit, and clicks for re-recommendation
    filtering (in the seen-limit's step when it is on); ``times`` is (accepted, now),
    ``limits`` (the seen-limit or None, the re-click window).

    Idempotent, so done for duplicates too: a retry after a crash between the counting step
    and this one still records them."""
    (accepted, now), (seen_limit, reclick) = times, limits
    if kind == "i":
        if seen_limit is not None:
            shown = [(served[rid].user_id, post_id, rid) for rid, post_id, _ in todo]
            storage.shown.remember_impressions(shown, now, seen_limit)
        return
    clicks = [(served[rid].user_id, post_id) for rid, post_id, _ in todo]
    if seen_limit is not None:
        storage.shown.remember_clicks(clicks, accepted, now, seen_limit, reclick)
    else:
        storage.serving.remember_clicks(clicks, now, reclick)


def _arms(served: dict[str, Served], todo: list[tuple[str, str, str]]) -> dict[str, SlateArm]:
    """The experiment arm of each request of ``todo`` whose slate an experiment served."""
    arms = {}
    for request_id in dict.fromkeys(r for r, _, _ in todo):
        arm = slate_arm(served[request_id])
        if arm is not None:
            arms[request_id] = arm
    return arms


def _outcome(
    kind: str,
    todo: list[tuple[str, str, str]],
    applied: list[int],
    served: dict[str, Served],
    results: Counter[str],
    waiting: list[list[str]],
) -> Outcome:
    by_policy: Counter[str] = Counter()
    implied: Counter[str] = Counter()
    by_variant: Counter[tuple[str, str]] = Counter()
    event_type = "impression" if kind == "i" else "click"
    for (request_id, _, _), status in zip(todo, applied, strict=True):
        results[COUNTED if status else DUPLICATE] += 1
        variant = served[request_id].variant or NO_VARIANT
        if status:
            by_policy[served[request_id].policy] += 1
            by_variant[variant, event_type] += 1
        if status == 2:
            implied[served[request_id].policy] += 1
            by_variant[variant, "impression"] += 1
    return Outcome(results, by_policy, implied, by_variant, waiting)
