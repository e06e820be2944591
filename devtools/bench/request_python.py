"""Where the per-request Python of ``GET /v1/recommendations`` goes, in one process.

``python -m devtools.bench.request_python [--candidates 4000] [--requests 3000]``

The Flask app (as ``create_app`` builds it, prometheus-client in multiprocess mode as under
gunicorn, the log line written to /dev/null) serves through its test client against a real
``redis-server`` holding ``--candidates`` live posts. It prints:

* the CPU time (``time.process_time``, which counts Redis's own CPU out) of a whole
  recommendation and of ``/healthz`` through the test client, per request;
* the CPU time of each part of the request's own Python, each called alone as the request
  calls it, with the request's real inputs: query validation, the slate's items, the
  decision-log entry, the metrics, the JSON log line and the response body;
* with ``--profile``, the largest frames of a cProfile run of the requests (cProfile's
  overhead inflates small functions: the shares order the parts, the timings above size them).

Each timing is the median of 5 rounds, in µs per call.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUNDS = 5


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Median over :data:`ROUNDS` of the CPU µs per call of ``fn``."""
    samples = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=4000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="also a cProfile of the requests")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp  # before prometheus-client is imported
        from devtools.redis_server import RedisServer

        with RedisServer(Path(tmp) / "redis") as server:
            measure(server.url, Path(tmp), args)
    return 0


def measure(redis_url: str, tmp: Path, args: argparse.Namespace) -> None:
    import redis

    from app import create_app, service
    from app.plans import Arm
    from app.runtime import runtime
    from app.schemas import RecommendationQuery
    from devtools.bench.catalogue import Catalogue
    from devtools.bench.report import commit
    from devtools.bench.stack import loadavg

    Catalogue.of(redis.Redis.from_url(redis_url)).grow(args.candidates)
    app = create_app({"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
                      "BANDIT_ADMIN_TOKEN": "bench",
                      "BANDIT_SNAPSHOT_DIR": str(tmp / "snap")})  # fmt: skip
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    for handler in logging.getLogger().handlers:
        handler.setStream(devnull)  # type: ignore[attr-defined]
    client = app.test_client()
    counter = iter(range(10**9))

    def recommend() -> None:
        answer = client.get(f"/v1/recommendations?user_id=m{next(counter)}&n=10")
        assert answer.status_code == 200, answer.get_data()

    def bare() -> None:
        assert client.get("/healthz").status_code == 200

    recommend()  # loads the snapshot
    print(f"commit {commit()}, load {loadavg()}, {args.candidates:,} candidates")
    calls = args.requests // ROUNDS
    rows = [("whole request (test client)", per_call_us(recommend, calls)),
            ("bare /healthz (test client)", per_call_us(bare, calls))]  # fmt: skip
    with app.test_request_context("/v1/recommendations?user_id=m1&n=10"):
        rt = runtime()
        snap = rt.snapshots.get()
        assert snap is not None
        query = RecommendationQuery.model_validate({"user_id": "m1", "n": "10"})
        arm = Arm(rt.policy)
        now = time.time()
        slate, items = service._choose(rt, snap, arm, query, [], now)
        body = service.recommend(rt, query)
        parts = _parts(app, rt, arm, query, slate, items, body, now)
        rows += [(name, per_call_us(fn, 2000)) for name, fn in parts.items()]
    for name, us in rows:
        print(f"{us:8.1f} µs  {name}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: per_call_us(recommend, args.requests // ROUNDS))
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(45)


def _parts(
    app: Any, rt: Any, arm: Any, query: Any, slate: Any, items: Any, body: Any, now: float
) -> dict[str, Callable[[], object]]:
    """Each part of the request's own Python, called as the request calls it."""
    from flask import jsonify, request

    from app import decisions, service, views
    from app.schemas import RecommendationQuery

    hooks = app.after_request_funcs[None]
    record_metrics = next(f for f in hooks if f.__name__ == "_record")
    response = jsonify({"status": "ok"})
    return {
        "query validation (known names + pydantic)": lambda: (
            views._known_query(),
            RecommendationQuery.model_validate(request.args.to_dict()),
        ),
        "slate items (post, forum, rank)": lambda: [
            {"post_id": p, "forum_id": f, "rank": r}
            for r, (p, f) in enumerate(rt.snapshots.get().items(slate.posts), start=1)
        ],
        "decision-log entry": lambda: decisions.fields(
            "r1", now, query.user_id, slate, items, arm.experiment, arm.variant
        ),
        "metrics: slate counters": lambda: service._count_slate(arm, len(items), False),
        "metrics: HTTP latency + count": lambda: record_metrics(response),
        "JSON log line (logging + formatter)": lambda: service._log_slate(body, query, 0.00123),
        "response body (jsonify)": lambda: jsonify(body),
        "request id": lambda: service.new_request_id(query.user_id, now),
    }


if __name__ == "__main__":
    sys.exit(main())
