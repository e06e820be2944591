"""Every Prometheus metric of postbandit, defined once, with bounded labels only.

Labels are drawn from small fixed sets (endpoint rule, method, status, policy, type, result,
task, operation, role, queue, decision-log source, and the variant of the running experiment:
at most 10 names an experiment, and ``none``): never a user id, post id, experiment id or raw
path.
docs/metrics.md is the catalogue (a test keeps it in step with this module).

Two exposures, two registries:

* ``WEB``: the gunicorn workers. Under gunicorn they run in prometheus-client's multiprocess
  mode (``PROMETHEUS_MULTIPROC_DIR``, wiped at start and with dead workers' live gauges dropped
  by gunicorn.conf.py); counters and histograms of dead workers stay in the sum, as
  prometheus-client documents, so totals never go backwards.
* ``WORKER``: the Celery worker serves its own ``/metrics`` (workers/monitoring.py): under a
  Procfile platform web and worker run on different hosts and cannot share a directory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import prometheus_client
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.events import EVENT_TYPES, NO_VARIANT

WEB = CollectorRegistry(auto_describe=True)
WORKER = CollectorRegistry(auto_describe=True)

METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
RECOMMENDATION_RESULTS = ("ok", "empty", "unavailable")
WEB_REDIS_OPERATIONS = ("snapshot", "remember_served", "journal", "enqueue", "probe")
TASK_OUTCOMES = ("retried", "failed")


class _Children:
    """``labels(*values)`` from a dict after the first call with the same values: the request
    path calls it several times per request, and prometheus-client checks and converts the
    values and takes a lock on every call (1.5-2 µs). The children are the library's own, kept
    for the life of the metric (nothing here removes one); labels by name, or not hashable, go
    to the library each time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._children: dict[tuple[Any, ...], Self] = {}
        super().__init__(*args, **kwargs)

    def labels(self, *values: Any, **named: Any) -> Self:
        try:
            child = None if named else self._children.get(values)
        except TypeError:  # a value that is not hashable: the library takes its str
            return super().labels(*values)  # type: ignore[misc]
        if child is None:
            child = super().labels(*values, **named)  # type: ignore[misc]
            if not named:
                self._children[values] = child
        return child


class Counter(_Children, prometheus_client.Counter):
    pass


class Histogram(_Children, prometheus_client.Histogram):
    pass


class Gauge(_Children, prometheus_client.Gauge):
    pass


# ---- web tier ------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "postbandit_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"],
    registry=WEB,
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "postbandit_http_request_duration_seconds", "HTTP request latency",
    ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=WEB,
)  # fmt: skip
RECOMMENDATIONS = Counter(
    "postbandit_recommendations_total", "Recommendation requests (ok, empty, unavailable)",
    ["policy", "result"], registry=WEB,
)  # fmt: skip
DEGRADED = Counter(
    "postbandit_recommendations_degraded_total",
    "Slates served degraded (a Redis read or write of the request failed)", ["policy"],
    registry=WEB,
)  # fmt: skip
SLATE_ITEMS = Histogram(
    "postbandit_slate_items", "Posts per served slate", ["policy"],
    buckets=(0, 1, 2, 5, 10, 20, 50), registry=WEB,
)  # fmt: skip
EXPERIMENT_SLATES = Counter(
    "postbandit_experiment_slates_total",
    "Slates served, by the experiment variant that chose them (none: outside an experiment)",
    ["variant"], registry=WEB,
)  # fmt: skip
SEEN_LIMITED = Counter(
    "postbandit_seen_limited_slates_total",
    "Slates chosen while the seen-limit hid from the member a post shown to them as often "
    "as it allows", ["policy"], registry=WEB,
)  # fmt: skip
EVENTS_RECEIVED = Counter(
    "postbandit_events_received_total", "Events accepted (202) and queued for the workers",
    ["type"], registry=WEB,
)  # fmt: skip
SNAPSHOT_SECONDS = Histogram(
    "postbandit_snapshot_refresh_seconds", "Time to refresh the statistics snapshot",
    buckets=LATENCY_BUCKETS, registry=WEB,
)  # fmt: skip
SLATES_WRITTEN = Counter(
    "postbandit_slates_written_total",
    "Served slates written to Redis behind the responses (app.slate_writer)", registry=WEB,
)  # fmt: skip
SLATES_DROPPED = Counter(
    "postbandit_slates_dropped_total",
    "Served slates never written: Redis failed while more than the writer holds waited (the "
    "oldest go), or it still failed at shutdown; their events count unknown_request",
    registry=WEB,
)  # fmt: skip
SLATES_PENDING = Gauge(
    "postbandit_slates_pending",
    "Served slates waiting to be written to Redis, summed over the live web processes",
    multiprocess_mode="livesum", registry=WEB,
)  # fmt: skip
SLATE_FLUSH_SECONDS = Histogram(
    "postbandit_slate_flush_seconds", "Time to write one batch of served slates to Redis",
    buckets=LATENCY_BUCKETS, registry=WEB,
)  # fmt: skip
LIVE_POSTS = Gauge(
    "postbandit_live_posts", "Live candidate posts in the statistics snapshot",
    multiprocess_mode="livemostrecent", registry=WEB,
)  # fmt: skip
LIVE_FORUMS = Gauge(
    "postbandit_live_forums", "Forums with at least one live post in the snapshot",
    multiprocess_mode="livemostrecent", registry=WEB,
)  # fmt: skip
SNAPSHOT_TIMESTAMP = Gauge(
    "postbandit_snapshot_timestamp_seconds",
    "When the statistics snapshot of each live web process began reading Redis (unix s)",
    multiprocess_mode="liveall", registry=WEB,
)  # fmt: skip
# Gauges whose 0 means "nothing yet": prometheus-client writes a label-less gauge at 0 as soon
# as a process defines it, and a snapshot read at 0 would be fifty years old. The web tier's
# exposition leaves these samples out (Unset).
UNSET_AT_ZERO = frozenset({"postbandit_snapshot_timestamp_seconds"})

# ---- worker --------------------------------------------------------------------------------

EVENTS_APPLIED = Counter(
    "postbandit_events_applied_total", "Events processed by the workers, by outcome",
    ["type", "result"], registry=WORKER,
)  # fmt: skip
EVENT_LAG = Histogram(
    "postbandit_event_lag_seconds",
    "Time from the API accepting an event batch to the worker having applied it",
    ["type"], buckets=LAG_BUCKETS, registry=WORKER,
)  # fmt: skip
IMPRESSIONS = Counter(
    "postbandit_impressions_total", "Impressions counted, by the policy that served the slate",
    ["policy"], registry=WORKER,
)  # fmt: skip
EXPERIMENT_EVENTS = Counter(
    "postbandit_experiment_events_total",
    "Impressions and clicks counted, by the experiment variant whose slate they belong to "
    "(none: outside an experiment)",
    ["variant", "type"], registry=WORKER,
)  # fmt: skip
CLICKS = Counter(
    "postbandit_clicks_total", "Clicks counted, by the policy that served the slate",
    ["policy"], registry=WORKER,
)  # fmt: skip
TASK_SECONDS = Histogram(
    "postbandit_task_duration_seconds", "Celery task run time (every attempt)", ["task"],
    buckets=LATENCY_BUCKETS, registry=WORKER,
)  # fmt: skip
TASK_FAILURES = Counter(
    "postbandit_task_failures_total",
    "Celery task attempts that raised: retried (will run again) or failed (given up)",
    ["task", "outcome"], registry=WORKER,
)  # fmt: skip
DRAIN_LAG = Gauge(
    "postbandit_decision_drain_lag_seconds",
    "Age of the oldest decision-log entry not yet drained to the decision files, by source "
    "(0: none waiting; absent while the drain is off)",
    ["source"], registry=WORKER,
)  # fmt: skip

# ---- both ----------------------------------------------------------------------------------

REDIS_ERRORS = Counter(
    "postbandit_redis_errors_total", "Redis errors caught at a boundary", ["operation"],
    registry=WEB,
)  # fmt: skip
PROCESS_MEMORY = Gauge(
    "postbandit_process_resident_memory_bytes", "Resident memory of the process",
    multiprocess_mode="liveall", registry=WEB,
)  # fmt: skip
WORKER.register(REDIS_ERRORS)
WORKER.register(PROCESS_MEMORY)

_process = ProcessCollector(registry=None)


def redis_failed(log: logging.Logger, operation: str, exc: Exception) -> None:
    """Log a failed Redis operation and count it by ``operation`` (a bounded name)."""
    log.warning("redis %s failed: %s", operation, exc)
    REDIS_ERRORS.labels(operation=operation).inc()


def resident_memory() -> float:
    """This process's resident memory in bytes (0 where /proc is not available)."""
    for family in _process.collect():
        if family.name == "process_resident_memory_bytes":
            return float(family.samples[0].value)
    return 0.0


def init_web_labels(policy: str) -> None:
    """Create the web tier's series at zero, so that rates and ratios exist before traffic."""
    for result in RECOMMENDATION_RESULTS:
        RECOMMENDATIONS.labels(policy, result)
    DEGRADED.labels(policy)
    SEEN_LIMITED.labels(policy)
    SLATE_ITEMS.labels(policy)
    EXPERIMENT_SLATES.labels(NO_VARIANT)
    for event_type in EVENT_TYPES:
        EVENTS_RECEIVED.labels(event_type)
    for operation in WEB_REDIS_OPERATIONS:
        REDIS_ERRORS.labels(operation)


def init_worker_labels(policy: str, results: Iterable[str], tasks: Iterable[str]) -> None:
    """Create the worker's series at zero (results: the event outcomes; tasks: task names)."""
    results = tuple(results)
    for event_type in EVENT_TYPES:
        EVENT_LAG.labels(event_type)
        for result in results:
            EVENTS_APPLIED.labels(event_type, result)
    IMPRESSIONS.labels(policy)
    CLICKS.labels(policy)
    for event_type in EVENT_TYPES:
        EXPERIMENT_EVENTS.labels(NO_VARIANT, event_type)
    for task in tasks:
        TASK_SECONDS.labels(task)
        REDIS_ERRORS.labels(task)
        for outcome in TASK_OUTCOMES:
            TASK_FAILURES.labels(task, outcome)


class Unset(Collector):
    """The metrics of ``source`` without the samples at 0 of the :data:`UNSET_AT_ZERO` gauges:
    a process that has not loaded a snapshot exports no snapshot timestamp."""

    def __init__(self, source: Collector | CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            if family.name in UNSET_AT_ZERO:
                family.samples = [s for s in family.samples if s.value != 0]
            yield family


# ---- read at scrape time -------------------------------------------------------------------


@dataclass(frozen=True)
class Dependencies:
    """What the web tier reads when scraped: Redis reachability by role, queue depths, and the
    age in seconds of the oldest batch waiting in the journal (0: none; None: unknown)."""

    redis_up: dict[str, bool] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    oldest_pending_age: float | None = None
    srm_p_value: float | None = None  # None: no experiment runs (or it could not be read)


class DependencyCollector(Collector):
    """``postbandit_redis_up``, ``postbandit_queue_depth``,
    ``postbandit_oldest_pending_batch_age_seconds`` and ``postbandit_experiment_srm_p_value``,
    read live on every scrape.

    The web tier reads them (not the worker) so they stay visible when no worker is alive.
    """

    def __init__(self, read: Callable[[], Dependencies]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        deps = self._read()
        up = GaugeMetricFamily(
            "postbandit_redis_up", "1 if Redis answered this scrape's probe, by role",
            labels=["role"],
        )  # fmt: skip
        for role, ok in sorted(deps.redis_up.items()):
            up.add_metric([role], 1.0 if ok else 0.0)
        depth = GaugeMetricFamily(
            "postbandit_queue_depth", "Messages (event batches) waiting in a broker queue",
            labels=["queue"],
        )  # fmt: skip
        for queue, length in sorted(deps.queue_depth.items()):
            depth.add_metric([queue], float(length))
        waiting = GaugeMetricFamily(
            "postbandit_oldest_pending_batch_age_seconds",
            "Seconds since the oldest accepted, not yet applied, event batch was handed to the "
            "broker (0: none waiting)",
        )  # fmt: skip
        if deps.oldest_pending_age is not None:
            waiting.add_metric([], deps.oldest_pending_age)
        srm = GaugeMetricFamily(
            "postbandit_experiment_srm_p_value",
            "Sample-ratio check of the running experiment: chi-square p-value of its members "
            "per variant against the weights (absent outside an experiment)",
        )  # fmt: skip
        if deps.srm_p_value is not None:
            srm.add_metric([], deps.srm_p_value)
        yield up
        yield depth
        yield waiting
        yield srm
