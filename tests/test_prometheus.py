"""Alert rules, dashboard and a real Prometheus scraping the running service.

promtool checks and unit-tests the rules; a real Prometheus (Debian's package, installed by
bin/install-system-deps) scrapes gunicorn (2 workers) and a Celery worker under a little
traffic, and every expression of the dashboard and of the alert rules must return data:

* a dashboard expression must return at least one finite value;
* an alert expression is a condition (``signal > threshold``), which returns nothing while the
  system is healthy. So each comparison is evaluated with ``bool`` (``signal > bool threshold``,
  0 or 1 for every series of the signal), which must return data, and the signal itself (the
  comparison's left-hand side) must return a finite value;
* every metric selector of either (``postbandit_queue_depth{queue="postbandit.events"}``) must
  match a series on its own, so a fallback such as ``or vector(0)`` cannot hide a misspelt
  name or label.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import requests
import yaml

from devtools import dashboard
from devtools.redis_server import free_port
from tests.processes import (
    ROOT,
    Proc,
    service_env,
    start_web,
    start_worker,
    stop_all,
    wait_for,
    wait_for_fresh_snapshots,
    web_and_worker,
)

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "postbandit.json"
COMPARISONS = {">", "<", ">=", "<=", "==", "!="}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
ADMIN_TOKEN = "prom-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run bin/install-system-deps (Debian: prometheus)"
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def alert_rules() -> dict[str, str]:
    """alert name -> expression, from the rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_targets() -> dict[str, str]:
    """'panel title / refId' -> expression, from the dashboard JSON."""
    model = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in model["panels"]
        for target in panel.get("targets", [])
    }


# ---- promtool ------------------------------------------------------------------------------


def test_promtool_checks_the_rules_and_the_prometheus_config() -> None:
    rules = promtool("check", "rules", RULES)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout
    config = promtool("check", "config", DEPLOY / "prometheus" / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alert_rules()) == firing == quiet


# ---- dashboard ---------------------------------------------------------------------------


def test_the_dashboard_file_is_the_one_built_from_code() -> None:
    assert DASHBOARD.read_text() == dashboard.render(), "run: python -m devtools.dashboard"


def test_the_dashboard_is_provisionable_as_is() -> None:
    model = json.loads(DASHBOARD.read_text())
    panels = model["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows[0] == "API" and any("CTR" in r for r in rows)
    for panel in (p for p in panels if p["type"] != "row"):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "postbandit.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards" / "postbandit.yml").read_text())
    assert provider["providers"][0]["options"]["path"]
    for expr in dashboard_targets().values():
        promql.parse(expand(expr))  # raises on a syntax error


# ---- PromQL helpers ------------------------------------------------------------------------


def expand(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def selectors(expr: str) -> list[str]:
    found: list[str] = []
    promql.walk(
        promql.parse(expr),
        lambda node: found.append(str(node)) if isinstance(node, promql.VectorSelector) else None,
    )
    return found


def comparisons(expr: str) -> list[Any]:
    found: list[Any] = []
    promql.walk(
        promql.parse(expr),
        lambda node: found.append(node) if _is_filter(node) else None,
    )
    return found


def _is_filter(node: Any) -> bool:
    return (
        isinstance(node, promql.BinaryExpr)
        and str(node.op) in COMPARISONS
        and not (node.modifier and node.modifier.return_bool)
    )


def with_bool(expr: str) -> str:
    """``expr`` with every filtering comparison turned into a ``bool`` one."""

    def rewrite(node: Any) -> Any:
        if not _is_filter(node):
            return None
        assert not (node.modifier and node.modifier.matching), "vector matching unsupported"
        return promql.parse(f"({node.lhs}) {node.op} bool ({node.rhs})")

    return str(promql.transform(promql.parse(expr), post_visit=rewrite))


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[float]:
        response = requests.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        data = body["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(series["value"][1]) for series in data["result"]]

    def get(self, path: str) -> Any:
        return requests.get(f"{self.base}{path}", timeout=10).json()["data"]


def panel_problems(prom: Prometheus, name: str, expr: str) -> list[str]:
    expr = expand(expr)
    problems = [f"{name}: selector {s} matches no series"
                for s in selectors(expr) if not prom.query(s)]  # fmt: skip
    if not any(math.isfinite(v) for v in prom.query(expr)):
        problems.append(f"{name}: {expr} returns no finite value")
    return problems


def alert_problems(prom: Prometheus, name: str, expr: str) -> list[str]:
    problems = [f"{name}: selector {s} matches no series"
                for s in selectors(expr) if not prom.query(s)]  # fmt: skip
    if not prom.query(with_bool(expr)):
        problems.append(f"{name}: {with_bool(expr)} returns no data")
    for condition in comparisons(expr):
        if not any(math.isfinite(v) for v in prom.query(str(condition.lhs))):
            problems.append(f"{name}: signal {condition.lhs} returns no finite value")
    return problems


def test_the_promql_helpers() -> None:
    expr = '(sum(up{job="w"}) or vector(0)) < 1 and max(deriv(q{a="b"}[5m])) > 0'
    assert selectors(expr) == ['up{job="w"}', 'q{a="b"}']
    assert [" ".join(str(c.lhs).split()) for c in comparisons(expr)] == [
        '(sum(up{job="w"}) or vector(0))',
        'max(deriv(q{a="b"}[5m]))',
    ]
    assert with_bool('sum(x{a="b"}) > 0.05').replace(" ", "") == '(sum(x{a="b"}))>bool(0.05)'
    assert comparisons(with_bool(expr)) == []


# ---- a real Prometheus ---------------------------------------------------------------------


@pytest.fixture
def service(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """gunicorn (2 workers) and a Celery worker with its /metrics; (web base, worker target)."""
    worker_port = free_port()
    # The worker gets the web's PROMETHEUS_MULTIPROC_DIR too, as a shared .env gives it; it
    # drains the decision log (the drain lag's panel and alert).
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=ADMIN_TOKEN,
                      BANDIT_WORKER_METRICS_PORT=str(worker_port),
                      BANDIT_WORKER_METRICS_HOST="127.0.0.1",
                      BANDIT_DECISION_LOG_URL=str(tmp_path / "decision-log"),
                      BANDIT_DECISION_LOG_FILE_SECONDS="10",
                      PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "web-metrics"))  # fmt: skip
    with web_and_worker(env, tmp_path) as running:
        yield running.base, f"127.0.0.1:{worker_port}"


def prometheus_config(web: str, worker: str, tmp: Path, rules: Path = RULES) -> Path:
    """deploy/prometheus/prometheus.yml with these targets, 1 s intervals, absolute rule path."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    targets = {"postbandit-web": web, "postbandit-worker": worker}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus(service: tuple[str, str], tmp_path: Path) -> Iterator[Prometheus]:
    base, worker = service
    with running_prometheus(prometheus_config(base.removeprefix("http://"), worker, tmp_path),
                            tmp_path) as prom:  # fmt: skip
        yield prom


@contextmanager
def running_prometheus(config: Path, tmp_path: Path) -> Iterator[Prometheus]:
    """A Prometheus with ``config`` for the length of the block, once it is ready."""
    port = free_port()
    args = [tool("prometheus"), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn"]  # fmt: skip
    proc = Proc("prometheus", args, {}, tmp_path / "prometheus.log").start()
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _ready(prom.base) or not proc.alive(), 30, "prometheus to be ready")
        assert proc.alive(), proc.output()
        yield prom
    finally:
        proc.stop()
        print(f"--- prometheus log ---\n{proc.output()[-3000:]}")


def _ready(base: str) -> bool:
    try:
        return requests.get(f"{base}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def traffic(base: str, stop: threading.Event, errors: list[BaseException]) -> None:
    """Slates (some empty), impressions, clicks, duplicates and a 404, until ``stop``."""
    session, turn = requests.Session(), 0
    try:
        while not stop.is_set():
            turn += 1
            params = {"user_id": f"member-{turn}", "n": 3}  # new members: nothing clicked yet
            slate = session.get(f"{base}/v1/recommendations", params=params, timeout=5).json()
            session.get(f"{base}/v1/recommendations", timeout=5,
                        params={**params, "forums": "nosuchforum"})  # fmt: skip
            shown = [{"request_id": slate["request_id"], "post_id": i["post_id"]}
                     for i in slate["items"]]  # fmt: skip
            for kind, events in (("impressions", shown), ("clicks", shown[:1]),
                                 ("impressions", shown[:1])):  # fmt: skip
                response = session.post(f"{base}/v1/{kind}", json={"events": events}, timeout=5)
                assert response.status_code == 202, response.text
            session.get(f"{base}/v1/posts/nosuchpost", timeout=5)
            stop.wait(0.1)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_every_dashboard_and_alert_expression_returns_data(
    service: tuple[str, str], prometheus: Prometheus
) -> None:
    base, _ = service
    for i in range(6):
        response = requests.put(f"{base}/v1/posts/post-{i}", json={"forum_id": f"forum-{i % 2}"},
                                headers=ADMIN, timeout=5)  # fmt: skip
        assert response.status_code == 201, response.text
    # An experiment runs: its panels and the sample-ratio alert's signal have data.
    experiment = {
        "variants": [
            {"name": "a", "policy": "two_level_ts", "weight": 1},
            {"name": "b", "policy": "greedy", "weight": 1},
        ],
        "control": "a",
    }
    response = requests.put(f"{base}/v1/experiments/exp", json=experiment, headers=ADMIN,
                            timeout=5)  # fmt: skip
    assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())  # the traffic's slates hold posts
    stop, errors = threading.Event(), []
    thread = threading.Thread(target=traffic, args=(base, stop, errors), daemon=True)
    thread.start()
    panels, alerts = dashboard_targets(), alert_rules()

    def problems() -> list[str]:
        found = [p for name, e in panels.items() for p in panel_problems(prometheus, name, e)]
        found += [p for name, e in alerts.items() for p in alert_problems(prometheus, name, e)]
        pending = {s["metric"]["alertname"] for s in prometheus.get(
            "/api/v1/query?query=ALERTS")["result"]}  # fmt: skip
        # Half of the slates of this traffic are empty: that alert, and only it, is pending.
        if pending != {"PostbanditEmptyRecommendations"}:
            found.append(f"alerts pending or firing: {sorted(pending)}")
        return found

    deadline = time.monotonic() + 60  # data appears within a few scrapes (1 s apart)
    try:
        while (found := problems()) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert found == [], "\n".join(found)
    assert errors == []
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert {(t["labels"]["job"], t["health"]) for t in targets} == {
        ("postbandit-web", "up"), ("postbandit-worker", "up")}  # fmt: skip
    rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(alerts)
    assert all(r["health"] == "ok" for r in rules), rules


def test_the_snapshot_age_counts_the_web_processes_only(
    service: tuple[str, str], prometheus: Prometheus
) -> None:
    """Each gunicorn worker loads its snapshot before it serves; the Celery worker, given the
    web's metrics directory, has none and exports none, so the oldest snapshot's age is that of
    a web process, never the unix epoch's. (A web process without a snapshot exports nothing:
    tests/test_metrics.py.)"""
    base, _ = service
    response = requests.put(f"{base}/v1/posts/p", json={"forum_id": "f"}, headers=ADMIN,
                            timeout=5)  # fmt: skip
    assert response.status_code == 201, response.text
    wait_for_fresh_snapshots(base, after=time.time())
    slate = requests.get(f"{base}/v1/recommendations", params={"user_id": "u"}, timeout=5)
    assert slate.status_code == 200 and len(slate.json()["items"]) == 1, slate.text
    both = "count(postbandit_snapshot_timestamp_seconds) == 2"
    wait_for(lambda: bool(prometheus.query(both)), 30, "both web processes' snapshots scraped")
    [age] = prometheus.query(dashboard_targets()["Snapshot age (oldest web process) / A"])
    assert 0 <= age < 60
    assert prometheus.query(with_bool(alert_rules()["PostbanditSnapshotStale"])) == [0.0]


def rules_with(tmp: Path, alert: str, threshold: str) -> Path:
    """alerts.yml with ``alert`` at ``threshold`` (in place of its own) and no ``for``."""
    model = yaml.safe_load(RULES.read_text())
    [rule] = [r for g in model["groups"] for r in g["rules"] if r.get("alert") == alert]
    signal, _ = rule["expr"].rsplit(">", 1)
    rule.update(expr=f"{signal}> {threshold}", **{"for": "0s"})
    path = tmp / "alerts.yml"
    path.write_text(yaml.safe_dump(model))
    return path


def test_a_batch_no_worker_applies_fires_the_alert_until_a_worker_applies_it(
    redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    """Threshold 2 s instead of 300 s: the alert's expression on the real exposition."""
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=ADMIN_TOKEN)
    web, base = start_web(env, tmp_path)  # no worker yet
    procs = [web]
    rules = rules_with(tmp_path, "PostbanditEventsNotApplied", "2")
    config = prometheus_config(base.removeprefix("http://"), f"127.0.0.1:{free_port()}",
                               tmp_path, rules)  # fmt: skip
    firing = 'ALERTS{alertname="PostbanditEventsNotApplied",alertstate="firing"}'
    try:
        with running_prometheus(config, tmp_path) as prom:
            assert requests.put(f"{base}/v1/posts/p", json={"forum_id": "f"}, headers=ADMIN,
                                timeout=5).status_code == 201  # fmt: skip
            # A slate that holds p: an event of an empty one would wait for its slate 30 s.
            wait_for_fresh_snapshots(base, after=time.time())
            body = requests.get(f"{base}/v1/recommendations", params={"user_id": "u"},
                                timeout=5).json()  # fmt: skip
            assert [item["post_id"] for item in body["items"]] == ["p"], body
            events = {"events": [{"request_id": body["request_id"], "post_id": "p"}]}
            assert requests.post(f"{base}/v1/clicks", json=events, timeout=5).status_code == 202
            wait_for(lambda: bool(prom.query(firing)), 30, "the alert to fire", step=0.5)
            procs.append(start_worker(env, tmp_path))
            wait_for(lambda: not prom.query(firing), 30, "the alert to resolve", step=0.5)
            age = "postbandit_oldest_pending_batch_age_seconds"
            assert prom.query(age) == [0.0]
    finally:
        stop_all(procs)
