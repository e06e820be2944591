"""The benchmark's own parts: event batches, wrk's scripts against real processes, the report
file and the profile summary (bin/bench itself runs minutes and is not part of the suite)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from devtools.bench.catalogue import Catalogue
from devtools.bench.probes import PacedSender, SnapshotWatch, event_batches
from devtools.bench.profile import parts
from devtools.bench.report import replace_section
from devtools.bench.wrk import finish_wrk, run_wrk, start_wrk
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
