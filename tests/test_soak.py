"""A short soak in the suite (the long one is ``bin/soak``): the production stack at a steady
rate for 25 s, with zero 5xx, every process's memory flat within 8 MiB after the warm-up, and
every accepted event counted exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.soak import run

pytestmark = pytest.mark.e2e

SECONDS, RATE, BOUND_MIB, WINDOW = 25, 25, 8.0, 5


def test_short_soak(tmp_path: Path) -> None:
    report = run(SECONDS, RATE, clients=4, bound=BOUND_MIB, window=WINDOW, workdir=tmp_path)
    print(report)
    assert report.server_errors == 0, report.statuses
    assert report.visits >= 0.8 * SECONDS * RATE, report.visits
    assert report.statuses.get("impression 202", 0) >= report.visits * 0.95
    assert report.counts_exact
    assert set(report.rss_mib) >= {"web master", "web worker 0", "web worker 1",
                                   "celery worker", "redis"}  # fmt: skip
    for name, rss in report.rss_mib.items():
        assert rss["growth"] <= BOUND_MIB, (name, rss)
    assert report.passed
