"""Development runner behind ``bin/run``: Redis (embedded unless REDIS_URL is set), demo data,
gunicorn and a Celery worker, stopped together on Ctrl-C or when any of them exits.

Options: ``--port`` (web, default $PORT or 8000), ``--no-demo``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from devtools.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
BIN = Path(sys.executable).parent


def service_env(redis_url: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(REDIS_URL=redis_url, PORT=str(port), BIND_HOST=env.get("BIND_HOST", "127.0.0.1"),
               PYTHONUNBUFFERED="1")  # fmt: skip
    env.setdefault("BANDIT_WORKER_METRICS_HOST", env["BIND_HOST"])
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def commands() -> dict[str, list[str]]:
    """The two processes of the Procfile, from this virtualenv."""
    return {
        "web": [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
                "app:create_app()"],
        "worker": [str(BIN / "celery"), "--app", "workers.main", "--quiet", "worker",
                   "--pool", "threads", "--concurrency", "4", "--loglevel", "INFO"],
    }  # fmt: skip


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--no-demo", action="store_true", help="do not load the demo catalogue")
    args = parser.parse_args(argv)
    redis_server = None
    redis_url = os.environ.get("REDIS_URL")
    try:
        if not redis_url:
            redis_server = RedisServer(data_dir=VAR / "redis", appendonly=True).start()
            redis_url = redis_server.url
            print(f"embedded redis-server at {redis_url} (data in {VAR / 'redis'})",
                  file=sys.stderr)  # fmt: skip
        env = service_env(redis_url, args.port)
        # gunicorn's workers share one multiprocess metrics directory; the worker has its own.
        web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(VAR / "metrics")}
        if not args.no_demo and redis_server is not None:
            load_demo(env)
        procs = {name: subprocess.Popen(cmd, env=web_env if name == "web" else env, cwd=ROOT)
                 for name, cmd in commands().items()}  # fmt: skip
        print(f"postbandit on http://127.0.0.1:{args.port}  (Ctrl-C stops)", file=sys.stderr)
        return supervise(procs)
    finally:
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())
