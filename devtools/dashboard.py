"""The Grafana dashboard of postbandit, as code.

``python -m devtools.dashboard`` rewrites ``deploy/grafana/dashboards/postbandit.json`` (the file
Grafana provisions); a test checks that the committed file is what this module builds and that
every expression returns data from a real Prometheus scraping the service.

Panels select the Prometheus data source through the ``datasource`` variable, so the JSON works
with any Prometheus data source, provisioned (deploy/grafana/provisioning) or not.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent / "deploy/grafana/dashboards/postbandit.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
PANEL_WIDTH, PANEL_HEIGHT, COLUMNS = 8, 8, 3
API_ONLY = 'endpoint!~"/(healthz|readyz|metrics)"'


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    description: str = ""


def quantiles(metric: str, by: str, unit_legend: str) -> tuple[tuple[str, str], ...]:
    """p50, p95 and p99 of a histogram, per ``by`` (labels, may be empty)."""
    labels = f"le, {by}" if by else "le"
    return tuple(
        (f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))",
         f"p{round(q * 100)} {unit_legend}".strip())
        for q in (0.5, 0.95, 0.99)
    )  # fmt: skip


def ratio(numerator: str, denominator: str, window: str = RATE) -> str:
    return f"sum(rate({numerator}[{window}])) / sum(rate({denominator}[{window}]))"


API = (
    Panel("Requests per second by endpoint and status", "reqps", (
        (f"sum by (endpoint, status) (rate(postbandit_http_requests_total[{RATE}]))",
         "{{endpoint}} {{status}}"),
    )),
    Panel("Server errors (5xx) as a share of API requests", "percentunit", (
        (f'1 - ((sum(rate(postbandit_http_requests_total{{status!~"5..",{API_ONLY}}}[{RATE}]))'
         f" or vector(0)) / sum(rate(postbandit_http_requests_total{{{API_ONLY}}}[{RATE}])))",
         "5xx"),
    ), "As the PostbanditHighErrorRate alert: health, readiness and /metrics are left out."),
    Panel("Latency by endpoint", "s", quantiles(
        "postbandit_http_request_duration_seconds", "endpoint", "{{endpoint}}")),
)  # fmt: skip

RECOMMENDATIONS = (
    Panel("Recommendation requests by result", "reqps", (
        (f"sum by (result) (rate(postbandit_recommendations_total[{RATE}]))", "{{result}}"),
    )),
    Panel("Empty and degraded slates as a share of requests", "percentunit", (
        (ratio('postbandit_recommendations_total{result="empty"}',
               "postbandit_recommendations_total"), "empty"),
        (ratio("postbandit_recommendations_degraded_total", "postbandit_recommendations_total"),
         "degraded"),
    ), "Empty: no eligible post. Degraded: a Redis read or write of the request failed."),
    Panel("Posts per slate (mean)", "short", (
        (f"sum(rate(postbandit_slate_items_sum[{RATE}]))"
         f" / sum(rate(postbandit_slate_items_count[{RATE}]))", "posts per slate"),
    )),
    Panel("Live candidates", "short", (
        ("max(postbandit_live_posts)", "posts"),
        ("max(postbandit_live_forums)", "forums"),
    )),
    Panel("Snapshot age (oldest web process)", "s", (
        ("time() - min by (instance) (postbandit_snapshot_timestamp_seconds)", "{{instance}}"),
    ), "How old the statistics are that slates are drawn from, in the web process whose snapshot"
       " is oldest. A process that has not loaded a snapshot yet exports no timestamp and is left"
       " out (it answers 503, counted as unavailable)."),
)  # fmt: skip

LEARNING = (
    Panel("Events received and applied per second", "ops", (
        (f"sum by (type) (rate(postbandit_events_received_total[{RATE}]))", "received {{type}}"),
        (f"sum by (type, result) (rate(postbandit_events_applied_total[{RATE}]))",
         "applied {{type}} {{result}}"),
    )),
    Panel("Event lag, accepted to applied", "s", quantiles(
        "postbandit_event_lag_seconds", "", "")),
    Panel("Queue depth (event batches waiting)", "short", (
        ("max by (queue) (postbandit_queue_depth)", "{{queue}}"),
    )),
    Panel("Oldest event batch waiting to be applied", "s", (
        ("max(postbandit_oldest_pending_batch_age_seconds)", "oldest batch"),
    ), "Since the oldest accepted batch not yet applied was handed to the broker (0: none"
       " waits). Grows while no worker consumes, even when the queue is short."),
    Panel("Decision log drain lag", "s", (
        ("max by (source) (postbandit_decision_drain_lag_seconds)", "{{source}}"),
    ), "Age of the oldest decision-log entry not yet drained to the Parquet files (0: none"
       " waits). Normally below a file slice plus about 35 s; above 900 s for 10 min:"
       " PostbanditDecisionDrainLagging. No data while the drain is off."),
)  # fmt: skip

WORKERS = (
    Panel("Instances up", "short", (
        ('sum(up{job="postbandit-worker"})', "workers"),
        ('sum(up{job="postbandit-web"})', "web instances"),
    )),
    Panel("Task duration", "s", quantiles("postbandit_task_duration_seconds", "task", "{{task}}")),
    Panel("Task failures per second", "ops", (
        (f"sum by (task, outcome) (rate(postbandit_task_failures_total[{RATE}]))",
         "{{task}} {{outcome}}"),
    ), "retried: a Redis error, or events waiting for their slate to be written (up to 30 s); "
       "the task runs again. failed: given up, its events are lost."),
    Panel("Redis reachable (1 = yes)", "short", (
        ("min by (role) (postbandit_redis_up)", "{{role}}"),
    )),
    Panel("Redis errors per second by operation", "ops", (
        (f"sum by (operation) (rate(postbandit_redis_errors_total[{RATE}]))", "{{operation}}"),
    )),
    Panel("Process resident memory", "bytes", (
        ("max by (job, instance, pid) (postbandit_process_resident_memory_bytes)",
         "{{job}} {{instance}} {{pid}}"),
    )),
)  # fmt: skip

PRODUCT = (
    Panel("CTR by policy (last hour)", "percentunit", (
        ("sum by (policy) (rate(postbandit_clicks_total[1h]))"
         " / sum by (policy) (rate(postbandit_impressions_total[1h]))", "{{policy}}"),
    ), "Clicks / impressions counted, by the policy that served the slate."),
    Panel("Impressions and clicks per second by policy", "ops", (
        (f"sum by (policy) (rate(postbandit_impressions_total[{RATE}]))",
         "impressions {{policy}}"),
        (f"sum by (policy) (rate(postbandit_clicks_total[{RATE}]))", "clicks {{policy}}"),
    )),
)  # fmt: skip

EXPERIMENT = (
    Panel("CTR by experiment variant (last hour)", "percentunit", (
        ('sum by (variant) (rate(postbandit_experiment_events_total{type="click"}[1h]))'
         ' / sum by (variant) (rate(postbandit_experiment_events_total{type="impression"}[1h]))',
         "{{variant}}"),
    ), "Clicks / impressions counted, by the variant whose slate they belong to; none: slates"
       " outside an experiment. The experiment's result with its intervals:"
       " GET /v1/experiments/{id}/results."),
    Panel("Slates per second by experiment variant", "reqps", (
        (f"sum by (variant) (rate(postbandit_experiment_slates_total[{RATE}]))",
         "{{variant}}"),
    ), "Slates served, by the variant of the running experiment that chose them; none: outside"
       " an experiment (the promoted or configured policy)."),
    Panel("Sample-ratio check of the running experiment", "none", (
        ("min(postbandit_experiment_srm_p_value)", "p-value"),
    ), "Chi-square p-value of the members per variant against the weights; below 0.001 for"
       " 30 min: PostbanditExperimentSampleRatioMismatch. No data outside an experiment."),
)  # fmt: skip

ROWS = (
    ("API", API),
    ("Recommendations", RECOMMENDATIONS),
    ("Learning loop: events in, posteriors updated", LEARNING),
    ("Workers and dependencies", WORKERS),
    ("Product: CTR by policy", PRODUCT),
    ("Experiment", EXPERIMENT),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def build() -> dict[str, Any]:
    """The dashboard JSON model (Grafana schema version 39)."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        y += 1
        for i, panel in enumerate(row):
            column, line = i % COLUMNS, i // COLUMNS
            panels.append(_panel(panel, len(panels) + 1, column * PANEL_WIDTH,
                                 y + line * PANEL_HEIGHT))  # fmt: skip
        y += PANEL_HEIGHT * -(-len(row) // COLUMNS)
    return {
        "uid": "postbandit",
        "title": "postbandit",
        "description": "API, learning loop and product result of the postbandit recommender",
        "tags": ["postbandit"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
