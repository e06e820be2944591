"""The benchmark's own parts: event batches, wrk's scripts against real processes, the report
file and the profile summary, the capacity model, and the quick experiment and cluster modes
(the full bin/bench runs minutes and is not part of the suite)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests

from devtools.bench import capacity, experiment
from devtools.bench.__main__ import DOC
from devtools.bench.__main__ import main as bench_main
from devtools.bench.catalogue import Catalogue
from devtools.bench.probes import PacedSender, SnapshotWatch, event_batches
from devtools.bench.profile import parts
from devtools.bench.redis_stats import Counters, KeySample, counters, sample_keys
from devtools.bench.report import replace_section
from devtools.bench.stack import ADMIN_TOKEN
from devtools.bench.wrk import finish_wrk, run_wrk, start_wrk
from devtools.redis_cluster import LocalCluster
from tests.processes import (
    Proc,
    WebAndWorker,
    service_env,
    wait_drained,
    wait_for,
    web_and_worker,
)


def test_event_batches_carry_every_impression_and_one_click_per_slate(redis_url: str) -> None:
    catalogue = Catalogue.connect(redis_url)
    catalogue.grow(60)
    slates = catalogue.serve_slates(25)
    seen: Counter[tuple[str, str, str]] = Counter()
    for path, body in event_batches(slates):
        events = json.loads(body)["events"]
        assert path in ("/v1/impressions", "/v1/clicks") and 1 <= len(events) <= 100
        seen.update((path, e["request_id"], e["post_id"]) for e in events)
    impressions = {("/v1/impressions", s.request_id, p) for s in slates for p in s.forums}
    clicks = {("/v1/clicks", s.request_id, next(iter(s.forums))) for s in slates}
    assert set(seen) == impressions | clicks and set(seen.values()) == {1}


def test_a_section_is_replaced_in_place_and_others_are_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\n## theirs\nkept\n")
    replace_section(doc, "a", "new\n")
    replace_section(doc, "b", "added")
    assert doc.read_text() == (
        "# Benchmarks\n\n<!-- a:begin -->\nnew\n<!-- a:end -->\n\n## theirs\nkept\n\n"
        "<!-- b:begin -->\nadded\n<!-- b:end -->\n"
    )


def test_profile_parts_take_the_first_matching_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    serving = "run (gunicorn/workers/sync.py:1);recommend (/srv/app/service.py:2)"
    raw.write_text(
        f"{serving};Policy.select (/srv/bandits/policies.py:3) 6\n"
        f"{serving};MetricWrapperBase.labels (/v/site-packages/prometheus_client/metrics.py:4) 3\n"
        "_bootstrap (threading.py:5);SnapshotCache._run (/srv/app/snapshot.py:6) 1\n"
    )
    assert parts(raw) == (10, [
        ("policy.select (bandits/, Thompson draw and ranking)", 0.6),
        ("metrics (prometheus-client, multiprocess files)", 0.3),
        ("snapshot refresh (background thread)", 0.1),
    ])  # fmt: skip
    assert parts(raw, only="gunicorn/workers/")[0] == 9


@pytest.fixture
def stack(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[WebAndWorker]:
    with web_and_worker(service_env(redis_url, broker_url, tmp_path), tmp_path) as running:
        yield running


def running_threads() -> set[str]:
    return {thread.name for thread in threading.enumerate()}


@pytest.mark.e2e
def test_paced_events_and_the_snapshot_watch_run_in_threads_until_stopped(
    stack: WebAndWorker, redis_url: str
) -> None:
    catalogue = Catalogue.connect(redis_url)
    catalogue.grow(40)
    slates = catalogue.serve_slates(20)  # 200 impressions: two batches
    counted = catalogue.totals()[0] + 200
    workers = [child.pid for child in psutil.Process(stack.web.pid).children()]
    watch = SnapshotWatch(stack.base, workers).start()
    sender = PacedSender(stack.base, slates, events_per_second=1000).start()
    wait_for(lambda: catalogue.totals()[0] == counted and len(watch.series) >= 3, 30,
             "every impression counted and a few scrapes")  # fmt: skip
    sender.stop()
    watch.stop()
    assert (sender.sent, sender.failed) == (200, 0)
    assert all(scraped > 0 and built >= 0 for scraped, built in watch.series)
    # One batch every 100 s: stop ends the wait for the second one.
    slow = PacedSender(stack.base, slates, events_per_second=1).start()
    wait_for(lambda: slow.sent == 100, 10, "the first slow batch")
    slow.stop()
    assert running_threads().isdisjoint({"paced-events", "snapshot-watch"})


def accepted_batches(web: Proc) -> int:
    """How many event batches the web tier answered 202 ("events accepted" log lines)."""
    lines = (json.loads(line) for line in web.output().splitlines() if line.startswith("{"))
    return sum(line.get("msg") == "events accepted" for line in lines)


@pytest.mark.e2e
def test_wrk_reports_and_posts_every_batch_exactly_once(
    stack: WebAndWorker, redis_url: str, broker_url: str, tmp_path: Path
) -> None:
    base = stack.base
    bare = run_wrk(f"{base}/healthz", 1, 2)
    assert bare.requests > 0 and bare.non2xx == 0 and 0 < bare.p50_ms <= bare.p99_ms
    catalogue = Catalogue.connect(redis_url)
    catalogue.grow(80)
    slates = catalogue.serve_slates(40)
    batches = list(event_batches(slates))
    path = tmp_path / "batches.tsv"
    path.write_text("".join(f"{p}\t{b}\n" for p, b in batches))
    before = catalogue.totals()
    expected = (before[0] + 10 * len(slates), before[1] + len(slates))
    wrk = start_wrk(f"{base}/", 60, 4, "ingest.lua", (str(path),))
    try:
        wait_for(lambda: catalogue.totals() == expected, 60, "every event counted")
    finally:
        result = finish_wrk(wrk, interrupt=True)  # wrk has exited: it sends nothing more
    assert result.non2xx == 0 and result.socket_errors == 0
    assert accepted_batches(stack.web) == len(batches)
    stats, broker = redis.Redis.from_url(redis_url), redis.Redis.from_url(broker_url)
    wait_drained(base, stats, broker, 60)
    assert catalogue.totals() == expected


def test_counters_count_what_a_redis_did_and_keys_are_sampled(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    before = counters([client])
    pipe = client.pipeline(transaction=False)
    for i in range(30):
        pipe.hincrby(f"pb:{{f:x}}:seen:r{i}", "i:p", 1)
    pipe.execute()
    client.eval("redis.call('SET', KEYS[1], 'v'); return 1", 1, "pb:{f:x}:seen:seed0")
    used = counters([client]) - before
    assert used.calls == {"hincrby": 30, "eval": 1, "set": 1} and used.commands == 32
    assert used.net_in > 30 * len("hincrby") and used.net_out > 0 and used.cpu_seconds >= 0
    assert (used + used).commands == 64 and used.scaled(0.5).calls["hincrby"] == 15
    zero = Counters(0, {}, {}, 0, 0, 0.0, 0)
    assert (zero + used).calls == used.calls and (zero - used).calls["eval"] == -1
    seen = sample_keys([client], "pb:{f:*}:seen:*", skip=":seen:seed", sample=10)
    assert (seen.keys, seen.mean_members) == (30, 1.0) and seen.mean_bytes > 0
    assert sample_keys([client], "pb:nothing:*") == KeySample("pb:nothing:*", 0, 0.0, 0.0)


@pytest.mark.cluster
def test_counters_and_key_samples_sum_over_the_masters_of_a_cluster(cluster: LocalCluster) -> None:
    masters = cluster.masters_now()
    by_port = {m.connection_pool.connection_kwargs["port"]: m for m in masters}
    keys = [f"pb:{{u:{i:04x}}}:served:r{i}" for i in range(40)]
    owners = [by_port[cluster.master_of(key).port] for key in keys]
    assert len({id(owner) for owner in owners}) == 3  # every master holds some
    before = counters(masters)
    for key, owner in zip(keys, owners, strict=True):
        owner.hset(key, "u", "m")
    used = counters(masters) - before
    assert used.calls == {"hset": 40}
    found = sample_keys(masters, "pb:{u:*}:served:*", sample=9)
    assert found.keys == 40 and found.mean_members == 1.0


def measured(**changes: float) -> capacity.Measured:
    per = Counters(10.0, {"xadd": 1.0}, {"xadd": 20.0}, 1000.0, 100.0, 50e-6, 0.0)
    values: dict[str, Any] = dict(
        slate=per, event=per.scaled(0.1), broker_event=per.scaled(0.05), served_bytes=300.0,
        seen_keys_per_slate=9.0, seen_bytes=100.0, click_bytes=120.0, decision_bytes=1000.0,
        outcome_bytes=70.0, refresh_commands=3.0, refresh_cpu_s=20e-6, recs_per_process=100.0,
        cluster_recs=150.0, cluster_events=1000.0, forums=50,
    )  # fmt: skip
    return capacity.Measured(**{**values, **changes})


def test_the_capacity_model_follows_from_the_measured_figures() -> None:
    model = capacity.model(measured())
    keep = 86_400 + 3_600  # the default attribution window and grace
    assert model.memory["served slates (window + grace)"] == 5_000 * keep * 300
    assert model.memory["de-dup sets (window + grace)"] == 5_000 * keep * 9 * 100
    assert model.memory["decision stream (capped)"] == 100_000 * 1000
    assert model.cpu["serving"] == pytest.approx(5_000 * 50e-6)
    assert model.cpu["events"] == pytest.approx(50_000 * 5e-6)
    # 50 web processes (5,000 / 100) read 5,000 forums each second.
    assert model.commands["snapshot refreshes"] == 50 * 5_000 * 3
    assert model.cpu["snapshot refreshes"] == pytest.approx(50 * 5_000 * 20e-6)
    assert model.masters_for_cpu == math.ceil(sum(model.cpu.values()) / 0.5)
    assert model.masters_for_memory == math.ceil(sum(model.memory.values()) / 25 / 2**30)
    twice = capacity.model(measured(served_bytes=600.0, seen_bytes=200.0))
    assert twice.masters_for_memory > model.masters_for_memory
    text = "\n".join(capacity.render(measured()))
    assert "20.0 µs each measured" in text and f"so **{model.masters_for_memory}**" in text


@pytest.fixture
def bench_stack(redis_url: str, broker_url: str, tmp_path: Path) -> Iterator[WebAndWorker]:
    env = service_env(redis_url, broker_url, tmp_path, BANDIT_ADMIN_TOKEN=ADMIN_TOKEN)
    with web_and_worker(env, tmp_path) as running:
        yield running


@pytest.mark.e2e
def test_an_experiment_is_started_waited_for_and_stopped(
    bench_stack: WebAndWorker, redis_url: str
) -> None:
    Catalogue.connect(redis_url).grow(30)
    base = bench_stack.base
    experiment.wait_served(base, in_experiment=False)
    experiment.start_experiment(base, "bench-a")
    experiment.wait_served(base, in_experiment=True)
    variants = {
        requests.get(f"{base}/v1/recommendations", params={"user_id": f"u{i}"}, timeout=10)
        .json()["variant"] for i in range(60)
    }  # fmt: skip
    assert {"control", "recent"} <= variants <= {"control", "recent", "explore"}
    with pytest.raises(RuntimeError, match="409"):
        experiment.start_experiment(base, "bench-b")  # one runs already
    experiment.stop_experiment(base, "bench-a")
    experiment.wait_served(base, in_experiment=False)
    with pytest.raises(RuntimeError, match="409"):
        experiment.stop_experiment(base, "bench-a")
    with pytest.raises(TimeoutError):
        experiment.wait_served(base, in_experiment=True, timeout=1)


@pytest.mark.e2e
def test_the_quick_experiment_mode_runs_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = DOC.read_text()
    assert bench_main(["experiment", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "| 4,000 | 1 |" in out and "no experiment" in out and "3 variants" in out
    assert re.search(r"\| 4,000 \| [\d.]+ \| [\d.]+ \| [-+][\d.]+% \| [-+][\d.]+% ± nan% \|", out)
    assert DOC.read_text() == before


@pytest.mark.e2e
def test_the_quick_cluster_mode_runs_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = DOC.read_text()
    assert bench_main(["cluster", "--quick"]) == 0
    out = capsys.readouterr().out
    for side in ("one Redis", "3-master cluster"):
        assert f"| 1 | {side} |" in out
        assert re.search(rf"\| slate \| {side} \| [1-9][\d.]* \|", out)
        assert re.search(rf"\| event \| {side} \| [\d.]+ \|", out)
        assert re.search(rf"\| {side} \| served \| [1-9][\d,]* \| [1-9]", out)
    assert "Masters needed:" in out
    assert DOC.read_text() == before


def test_the_request_python_tool_times_every_part() -> None:
    """devtools/bench/request_python.py against its own redis-server, in its own process (it
    puts prometheus-client in multiprocess mode before importing it)."""
    run = subprocess.run(
        [sys.executable, "-m", "devtools.bench.request_python", "--candidates", "30",
         "--requests", "50"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    timed = dict(
        (line.split("µs", 1)[1].strip(), float(line.split()[0]))
        for line in run.stdout.splitlines()
        if "µs" in line
    )
    assert {"whole request (test client)", "decision-log entry", "response body (jsonify)",
            "JSON log line (logging + formatter)"} <= set(timed)  # fmt: skip
    assert len(timed) == 10 and all(us > 0 for us in timed.values())


@pytest.mark.e2e
def test_the_quick_workers_mode_measures_every_class_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each class serves both endpoints with gunicorn.conf.py; the slow clients hold both sync
    workers (so none answers), gevent still answers beside them."""
    before = DOC.read_text()
    assert bench_main(["workers", "--quick"]) == 0
    out = capsys.readouterr().out
    rows = {
        (m[1], m[2]): (float(m[3].replace(",", "")), float(m[4].replace(",", "")))
        for m in re.finditer(
            r"^\| (sync|gthread|gevent) \| (/healthz|recommendations) \| ([\d,]+) \| [\d.]+ / "
            r"[\d.]+ \| [\d.]+ \| 0 / 0 \| ([\d,]+) \|",
            out,
            re.M,
        )
    }
    assert len(rows) == 6 and all(fast > 0 for fast, _ in rows.values()), out
    assert rows["sync", "recommendations"][1] == 0 and rows["sync", "/healthz"][1] == 0, out
    assert rows["gevent", "recommendations"][1] > 0 and rows["gevent", "/healthz"][1] > 0, out
    assert DOC.read_text() == before
