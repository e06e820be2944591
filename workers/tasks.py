"""Celery tasks: thin, idempotent, timed and counted by task name."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject, Retry

from core import metrics
from core.events import SLATE_WAIT_SECONDS, Outcome, apply_batch
from core.queue import APPLY_EVENTS, EventBatch
from core.settings import Settings
from core.storage import Storage
from core.storage.errors import REDIS_ERRORS

log = logging.getLogger(__name__)

RETRY_BACKOFF_MAX = 30
# The first wait for slates not written yet (then doubled with each retry, up to the last).
SLATE_RETRY_SECONDS = (0.1, 5.0)


class MeteredTask(Task):
    """Times every attempt of a task and counts the ones that raise, by task name."""

    @property
    def metric_name(self) -> str:
        return str(self.name).rsplit(".", 1)[-1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Reject):
            metrics.TASK_FAILURES.labels(self.metric_name, "retried").inc()
            raise
        except Exception:
            metrics.TASK_FAILURES.labels(self.metric_name, "failed").inc()
            raise
        finally:
            metrics.TASK_SECONDS.labels(self.metric_name).observe(time.perf_counter() - started)


@shared_task(name=APPLY_EVENTS, bind=True, base=MeteredTask, acks_late=True, max_retries=None)
def apply_events(
    self: Task, event_type: str, events: list[list[str]], received_at: float
) -> dict[str, int]:
    """Apply a batch of ``[request_id, post_id]`` events of ``event_type``, accepted by the API
    at ``received_at``: its events are judged by that time, however late the batch runs.

    Redis errors retry the task (with back-off, without limit): an accepted event is never
    dropped, and re-applying the ones already counted is a no-op. Once applied, the batch leaves
    the journal (see workers.sweeper). Events whose slate is not written yet
    (core.events.SLATE_WAIT_SECONDS) stay in the journal in its place and run again alone, as
    a retry of this task (the same id).
    """
    settings: Settings = self.app.postbandit_settings
    storage: Storage = self.app.postbandit_storage.get()
    try:
        outcome = apply_batch(
            storage, event_type, events, time.time(), settings.attribution_seconds,
            settings.reclick_seconds, accepted_at=received_at,
            grace=settings.event_grace_seconds, seen_limit=settings.seen_window,
            wait=SLATE_WAIT_SECONDS,
        )  # fmt: skip
        waiting = EventBatch(event_type, outcome.waiting, received_at)
        _settle(storage, self.request.id, waiting)
    except REDIS_ERRORS as exc:
        metrics.redis_failed(log, "apply_events", exc)
        raise retry_later(self, exc) from exc
    lag = max(0.0, time.time() - received_at)
    _count(event_type, outcome, lag)
    log.info(
        "events applied",
        extra={"type": event_type, "events": len(events), "results": dict(outcome.results),
               "lag_seconds": round(lag, 3), "waiting": len(outcome.waiting)},
    )  # fmt: skip
    if outcome.waiting:
        raise _wait_for_slates(self, waiting)
    return dict(outcome.results)


def _wait_for_slates(task: Task, waiting: EventBatch) -> Exception:
    """What to raise so that the events whose slate is not written yet run again alone, later
    (a retry of the task, sooner the first times: a slate is written within milliseconds)."""
    first, last = SLATE_RETRY_SECONDS
    countdown = min(last, first * 2**task.request.retries)
    return retry_later(task, None, waiting.args(), countdown)


def _settle(storage: Storage, batch_id: str, waiting: EventBatch) -> None:
    """The batch leaves the journal, or only the events still ``waiting`` stay in it (before
    they are handed to the broker again).

    Raises:
        redis.RedisError: Redis failed (the journal holds the batch as it was).
    """
    if waiting.events:
        storage.journal.add(batch_id, waiting.to_json(), time.time())
    else:
        storage.journal.forget(batch_id)


def _count(event_type: str, outcome: Outcome, lag: float) -> None:
    metrics.EVENT_LAG.labels(event_type).observe(lag)
    for result, count in outcome.results.items():
        metrics.EVENTS_APPLIED.labels(type=event_type, result=result).inc(count)
    counted = metrics.CLICKS if event_type == "click" else metrics.IMPRESSIONS
    for policy, count in outcome.by_policy.items():
        counted.labels(policy).inc(count)
    for policy, count in outcome.implied_impressions.items():
        metrics.IMPRESSIONS.labels(policy).inc(count)
    for (variant, counted_type), count in outcome.by_variant.items():
        metrics.EXPERIMENT_EVENTS.labels(variant, counted_type).inc(count)


def retry_later(
    task: Task, exc: Exception | None, args: list[Any] | None = None,
    countdown: float | None = None,
) -> Exception:  # fmt: skip
    """What to raise so that a failed batch (or its ``args``, what is left of it) runs again
    and is never dropped; ``countdown`` defaults to a back-off by the retries so far.

    Normally a :class:`~celery.exceptions.Retry`: a copy of the message is published with a
    back-off, then this one is acknowledged. When that publish fails too (the broker is the
    Redis that just failed), Celery would reject the message for good; requeue it instead. If
    even the requeue cannot reach the broker, the message stays unacknowledged and the broker
    delivers it again after the visibility timeout.
    """
    if countdown is None:
        countdown = min(RETRY_BACKOFF_MAX, 2**task.request.retries)
    try:
        return task.retry(args=args, exc=exc, countdown=countdown, throw=False)
    except Reject:
        log.warning("could not publish the retry of a batch; requeueing it: %s", exc)
        return Reject(exc, requeue=True)
