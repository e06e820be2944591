"""Cost of the catalogue reads as the number of forums grows: ``GET /v1/posts/{id}``,
``GET /v1/forums/{id}`` and a page of ``GET /v1/forums``, through the Flask app of a serving
process (snapshot loaded) on a private redis-server, with 1 and with 5,000 registered forums.

    .venv/bin/python -m devtools.bench.catalogue_reads [--forums 1 5000] [--requests 2000]

Prints the machine, commit, command, load and, per size, the mean latency per request and the
Redis commands each request runs (a test checks the commands: tests/test_catalogue_reads.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import redis

from app import create_app
from devtools.bench.report import commit, machine
from devtools.bench.stack import loadavg
from devtools.redis_server import RedisServer

PATHS = ("/v1/posts/p0", "/v1/forums/f0", "/v1/forums?limit=100")


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def measure(url: str, forums: int, requests: int) -> dict[str, tuple[float, float]]:
    """path -> (mean ms per request, Redis commands per request) with ``forums`` forums."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    app = create_app({"REDIS_URL": url, "BANDIT_REFRESH_SECONDS": "300",
                      "BANDIT_SNAPSHOT_DIR": ""})  # fmt: skip
    try:
        storage = app.extensions["postbandit"].storage
        now = time.time()
        for f in range(forums):
            storage.catalogue.register(f"p{f}", f"f{f}", now, 86_400)
        assert app.extensions["postbandit"].snapshots.get() is not None
        web = app.test_client()
        results = {}
        for path in PATHS:
            before, started = commands(client), time.perf_counter()
            for _ in range(requests):
                assert web.get(path).status_code == 200
            seconds = time.perf_counter() - started
            results[path] = (1000 * seconds / requests, (commands(client) - before) / requests)
        return results
    finally:
        app.extensions["postbandit"].snapshots.stop()
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forums", type=int, nargs="+", default=[1, 5000])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    command = "python -m devtools.bench.catalogue_reads " + shlex.join(sys.argv[1:])
    print(f"Machine: {machine()}. Commit: `{commit()}`. Command: `{command.strip()}`.")
    print("\n| forums | load | " + " | ".join(f"`{p}` ms / cmds" for p in PATHS) + " |")
    print("|---:|---|" + "---:|" * len(PATHS))
    with tempfile.TemporaryDirectory() as tmp, RedisServer(data_dir=Path(tmp)) as server:
        for forums in args.forums:
            load = loadavg()
            found = measure(f"redis://127.0.0.1:{server.port}/0", forums, args.requests)
            cells = " | ".join(f"{ms:.2f} / {cmds:g}" for ms, cmds in found.values())
            print(f"| {forums:,} | {load} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
