"""Development runner behind ``bin/run``: Redis (embedded unless REDIS_URL is set), demo data,
gunicorn and a Celery worker, stopped together on Ctrl-C or when any of them exits.

With ``--cluster``, statistics live on a local Redis Cluster (3 masters, 3 replicas, under
``VAR/cluster``, formed anew at each start) and the broker on a Redis of its own
(``VAR/broker``), as a cluster deployment runs them.

The web and worker command lines are the Procfile's, with their programs from this virtualenv.
One instance at a time uses a state directory (``--var-dir``, default ``./var``: the embedded
Redis's data and the web workers' metrics): a second one is refused before it touches anything.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from devtools.redis_cluster import LocalCluster
from devtools.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
BIN = Path(sys.executable).parent
PROCFILE = ROOT / "Procfile"
LOCK = "run.lock"
SERVICE_ENV = "service.env"


def service_env(redis_url: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(REDIS_URL=redis_url, PORT=str(port), BIND_HOST=env.get("BIND_HOST", "127.0.0.1"),
               PYTHONUNBUFFERED="1")  # fmt: skip
    env.setdefault("BANDIT_WORKER_METRICS_HOST", env["BIND_HOST"])
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def commands(bin_dir: Path = BIN) -> dict[str, list[str]]:
    """The Procfile's processes (name -> argv), each program taken from ``bin_dir``; run them
    in the repository's root, as the Procfile's relative paths expect."""
    procs = {}
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            program, *args = shlex.split(command)
            procs[name.strip()] = [str(bin_dir / program), *args]
    return procs


@contextmanager
def exclusive(var: Path, port: int) -> Iterator[None]:
    """Hold ``var``'s lock (naming this instance: pid and URL) for the length of the block.

    The lock is an ``flock`` on ``var/run.lock``: the system releases it when this process
    ends, however it ends, so a crashed instance leaves no stale lock.

    Raises:
        SystemExit: another instance holds it; the message names that instance.
    """
    var.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(var / LOCK, os.O_RDWR | os.O_CREAT, 0o644), "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip() or "pid unknown"
            raise SystemExit(
                f"bin/run: another instance ({holder}) is running with {var}; stop it first, "
                "or give this one its own --var-dir, --port and BANDIT_WORKER_METRICS_PORT"
            ) from None
        lock.truncate()
        lock.write(f"pid {os.getpid()}, http://127.0.0.1:{port}\n")
        lock.flush()
        yield


def load_demo(env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "flask"), "--app", "app", "load-demo"], env=env, cwd=ROOT, check=True)


def supervise(procs: dict[str, subprocess.Popen[bytes]]) -> int:
    """Wait until a signal arrives or a process exits; stop the rest; the exit code."""
    stopping: list[int] = []

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        exited = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if exited:
            print(f"stopping: process exited {exited}", file=sys.stderr)
            code = 1
            break
        time.sleep(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        proc.wait(timeout=30)
    return code


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bin/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--port", type=_port, default=os.environ.get("PORT", "8000"),
        help="port of the web tier (default: $PORT or 8000)",
    )  # fmt: skip
    parser.add_argument("--no-demo", action="store_true", help="do not load the demo catalogue")
    parser.add_argument(
        "--var-dir", type=Path, default=VAR,
        help="this instance's state: embedded Redis data, web metrics (default: ./var)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster", action="store_true",
        help="statistics on a local Redis Cluster, the broker on a Redis of its own (under "
        "--var-dir; REDIS_URL is then ignored)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65_535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port in [1, 65535] (--port or PORT)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    var = args.var_dir.resolve()
    with exclusive(var, args.port):
        return run(var, args.port, demo=not args.no_demo, cluster=args.cluster)


def run(var: Path, port: int, demo: bool, cluster: bool = False) -> int:
    """Redis (embedded under ``var`` unless REDIS_URL is set; a cluster and a broker with
    ``cluster``), demo data, web and worker."""
    with _stores(var, cluster) as urls:
        env = {**service_env(urls.get("REDIS_URL", os.environ.get("REDIS_URL", "")), port),
               **urls}  # fmt: skip
        # gunicorn's workers share one multiprocess metrics directory; the worker has its own.
        web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(var / "metrics")}
        # What this instance's stores are, for the `flask --app app` commands (README).
        (var / SERVICE_ENV).write_text("".join(f"{k}={v}\n" for k, v in urls.items()))
        if demo and urls:
            load_demo(env)
        procs = {name: subprocess.Popen(cmd, env=web_env if name == "web" else env, cwd=ROOT)
                 for name, cmd in commands().items()}  # fmt: skip
        print(f"postbandit on http://127.0.0.1:{port}  (Ctrl-C stops)", file=sys.stderr)
        return supervise(procs)
    raise AssertionError("unreachable")  # _stores does not swallow exceptions


@contextmanager
def _stores(var: Path, cluster: bool) -> Iterator[dict[str, str]]:
    """Start what ``run`` embeds; the variables naming it (none: REDIS_URL is set)."""
    if cluster:
        shutil.rmtree(var / "cluster", ignore_errors=True)  # its nodes.conf names old ports
        with LocalCluster(var / "cluster") as stats, _embedded(var / "broker") as broker:
            print(f"redis cluster at {stats.url} (3 masters, 3 replicas, data in {var / 'cluster'})"
                  f"; broker redis-server at {broker.url}", file=sys.stderr)  # fmt: skip
            yield {"REDIS_URL": stats.url, "BANDIT_REDIS_CLUSTER": "true",
                   "CELERY_BROKER_URL": broker.url}  # fmt: skip
    elif os.environ.get("REDIS_URL"):
        yield {}
    else:
        with _embedded(var / "redis") as server:
            print(f"embedded redis-server at {server.url} (data in {var / 'redis'})",
                  file=sys.stderr)  # fmt: skip
            yield {"REDIS_URL": server.url}


@contextmanager
def _embedded(data_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=data_dir, appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
