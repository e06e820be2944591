"""A soak of the production stack at a steady rate: ``bin/soak`` (``--help`` for the options).

Redis, gunicorn and a Celery worker run as the Procfile starts them (devtools.bench.stack).
Client threads make visits at a fixed total rate: a slate for a member, an impression for each
of its posts, and for one visit in five a click. The run passes when no request got a 5xx or
failed to connect, when the memory (RSS) of every process after the warm-up stays flat within
the bound, and when every accepted event was counted exactly once once the queue drained.

The load is paced by hand rather than by wrk: a soak needs a steady rate of realistic visits
(a slate, then its own events), not the most requests per second.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from devtools.bench.stack import ADMIN_TOKEN, Stack, rss_mb

FORUMS, POSTS_PER_FORUM = 8, 25
CLICK_EVERY = 5


@dataclass
class SoakStack(Stack):
    """The benchmark's stack with a short attribution window and a small decision log, so that
    Redis holds a steady amount of data (every key of a visit expires within the window) and a
    flat memory curve means no leak anywhere."""

    window: int = 60

    def env(self) -> dict[str, str]:
        return {**super().env(), "BANDIT_ATTRIBUTION_SECONDS": str(self.window),
                "BANDIT_RECLICK_SECONDS": str(self.window),
                "BANDIT_DECISION_LOG_MAXLEN": "1000"}  # fmt: skip


@dataclass
class Tally:
    """What the clients saw, shared by their threads (under ``lock``)."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    accepted: dict[tuple[str, str, str], str] = field(default_factory=dict)  # event -> forum
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int | str, seconds: float) -> None:
        with self.lock:
            self.statuses[f"{kind} {status}"] += 1
            self.latencies.setdefault(kind, []).append(seconds)


@dataclass
class Report:
    seconds: float
    rate: float
    visits: int
    statuses: dict[str, int]
    server_errors: int
    latency_ms: dict[str, dict[str, float]]
    rss_mib: dict[str, dict[str, float]]
    rss_bound_mib: float
    events_accepted: int
    counts_exact: bool
    passed: bool


def visit(session: requests.Session, base: str, member: str, tally: Tally, click: bool) -> None:
    slate = _call(session, tally, "slate", "GET", f"{base}/v1/recommendations",
                  params={"user_id": member, "n": 5})  # fmt: skip
    if slate is None or slate.status_code != 200 or slate.json()["degraded"]:
        return
    body = slate.json()
    items = [(body["request_id"], i["post_id"], i["forum_id"]) for i in body["items"]]
    kinds = [("impression", items)] + ([("click", items[:1])] if click and items else [])
    for kind, events in kinds:
        payload = {"events": [{"request_id": r, "post_id": p} for r, p, _ in events]}
        response = _call(session, tally, kind, "POST", f"{base}/v1/{kind}s", json=payload)
        if response is not None and response.status_code == 202:
            with tally.lock:
                tally.accepted.update({(kind, r, p): f for r, p, f in events})


def _call(session: requests.Session, tally: Tally, kind: str, method: str, url: str,
          **kwargs: Any) -> requests.Response | None:  # fmt: skip
    started = time.monotonic()
    try:
        response = session.request(method, url, timeout=10, **kwargs)
    except requests.RequestException as exc:
        tally.record(kind, "error", time.monotonic() - started)
        with tally.lock:
            tally.errors.append(repr(exc))
        return None
    tally.record(kind, response.status_code, time.monotonic() - started)
    return response


def drive(base: str, rate: float, seconds: float, clients: int, tally: Tally) -> int:
    """Visits at ``rate`` per second in all, for ``seconds``; how many were made."""
    stop_at = time.monotonic() + seconds
    counts = [0] * clients

    def client(index: int) -> None:
        rng = random.Random(index)
        session = requests.Session()
        due = time.monotonic() + index / rate
        while due < stop_at:
            time.sleep(max(0.0, due - time.monotonic()))
            click = counts[index] % CLICK_EVERY == 0
            visit(session, base, f"m{rng.randrange(5000)}", tally, click)
            counts[index] += 1
            due += clients / rate

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def processes(stack: Stack) -> dict[str, int]:
    """Every process of the stack by a stable name."""
    assert stack.redis is not None and stack.redis.process is not None
    found = {"web master": stack.procs["web"].pid, "redis": stack.redis.process.pid}
    found |= {f"web worker {i}": pid for i, pid in enumerate(sorted(stack.web_pids()))}
    found["celery worker"] = stack.worker_pids()[0]
    return found


def sample_memory(stack: Stack, seconds: float, every: float) -> dict[str, list[float]]:
    """RSS of every process, every ``every`` seconds for ``seconds``."""
    samples: dict[str, list[float]] = {}
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        for name, pid in processes(stack).items():
            samples.setdefault(name, []).append(rss_mb(pid))
        time.sleep(every)
    return samples


def flatness(samples: list[float], warmup: int) -> dict[str, float]:
    """Median RSS of the first and last third after the warm-up samples, and the growth."""
    steady = samples[warmup:]
    third = max(1, len(steady) // 3)
    start, end = statistics.median(steady[:third]), statistics.median(steady[-third:])
    return {"start": round(start, 1), "end": round(end, 1), "growth": round(end - start, 1),
            "max": round(max(steady), 1)}  # fmt: skip


def register_catalogue(base: str) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for f in range(FORUMS):
        for p in range(POSTS_PER_FORUM):
            response = session.put(f"{base}/v1/posts/f{f}-p{p}", json={"forum_id": f"f{f}"},
                                   headers=headers, timeout=10)  # fmt: skip
            response.raise_for_status()


def counts_match(redis_url: str, accepted: dict[tuple[str, str, str], str]) -> bool:
    """Every post's stored counts equal those implied by the accepted events."""
    shown = Counter(p for kind, r, p in accepted if kind == "impression" or
                    ("impression", r, p) not in accepted)  # fmt: skip
    clicked = Counter(p for kind, _, p in accepted if kind == "click")
    client = redis.Redis.from_url(redis_url)
    stats = {f"f{f}": client.hgetall(f"pb:{{f:f{f}}}:stats") for f in range(FORUMS)}
    forum_of = {p: f for (_, _, p), f in accepted.items()}
    for post, forum in forum_of.items():
        stored = (int(stats[forum].get(f"i:{post}".encode(), 0)),
                  int(stats[forum].get(f"c:{post}".encode(), 0)))  # fmt: skip
        if stored != (shown[post], clicked[post]):
            return False
    return True


def run(
    seconds: float, rate: float, clients: int, bound: float, window: int, workdir: Path
) -> Report:
    """Soak for ``seconds``; memory is judged after a warm-up of a fifth of the run, and at
    least one attribution ``window`` (until then Redis fills up by design)."""
    tally = Tally()
    with SoakStack(workdir, window=window) as stack:
        register_catalogue(stack.base)
        time.sleep(2)  # snapshots pick up the catalogue
        memory: dict[str, list[float]] = {}
        sampler = threading.Thread(
            target=lambda: memory.update(sample_memory(stack, seconds, 1.0)), daemon=True
        )
        sampler.start()
        visits = drive(stack.base, rate, seconds, clients, tally)
        sampler.join()
        exact = _settled(stack.redis_url, tally.accepted, timeout=60)
    warmup = max(5, int(seconds * 0.2), window)
    rss = {name: flatness(samples, warmup) for name, samples in memory.items()}
    server_errors = sum(n for key, n in tally.statuses.items()
                        if key.endswith(" error") or key.split()[-1].startswith("5"))  # fmt: skip
    passed = server_errors == 0 and exact and all(r["growth"] <= bound for r in rss.values())
    return Report(
        seconds=seconds, rate=round(visits / seconds, 1), visits=visits,
        statuses=dict(sorted(tally.statuses.items())), server_errors=server_errors,
        latency_ms={kind: _percentiles(values) for kind, values in tally.latencies.items()},
        rss_mib=rss, rss_bound_mib=bound, events_accepted=len(tally.accepted),
        counts_exact=exact, passed=passed,
    )  # fmt: skip


def _settled(redis_url: str, accepted: dict[tuple[str, str, str], str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counts_match(redis_url, accepted):
            return True
        time.sleep(0.5)
    return False


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="length of the soak")
    parser.add_argument("--rate", type=float, default=40, help="visits per second")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument(
        "--rss-bound",
        type=float,
        default=16.0,
        help="largest RSS growth of any process after the warm-up (MiB)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=60,
        help="attribution window of the service (s); also the least warm-up",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="postbandit-soak-") as workdir:
        report = run(args.seconds, args.rate, args.clients, args.rss_bound, args.window,
                     Path(workdir))  # fmt: skip
    json.dump(asdict(report), sys.stdout, indent=2)
    print()
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
