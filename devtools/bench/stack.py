"""The production stack on loopback for the benchmark: a real Redis, and the web and worker
processes exactly as the Procfile starts them (gunicorn with gunicorn.conf.py, Celery)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devtools.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "bench-admin-token"


def procfile() -> dict[str, str]:
    """The process types of the Procfile: name -> command line."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time used so far by the processes (their threads included)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Stack:
    """Redis, web (gunicorn, ``workers`` processes) and one Celery worker, all on 127.0.0.1."""

    workdir: Path
    web_workers: int = 2
    redis: RedisServer | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BANDIT_", "PROMETHEUS_"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            REDIS_URL=f"redis://127.0.0.1:{self.redis.port}/0",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{self.redis.port}/1",
            BANDIT_ENV="production", BANDIT_ADMIN_TOKEN=ADMIN_TOKEN,
            BANDIT_WORKER_METRICS_PORT=str(free_port()),
            PORT=str(self.port), BIND_HOST="127.0.0.1", WEB_CONCURRENCY=str(self.web_workers),
            PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "web-metrics"),
        )  # fmt: skip
        return env

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(data_dir=self.workdir / "redis").start()
        self.port = free_port()
        for name, command in procfile().items():
            with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its copy
                self.procs[name] = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"], env=self.env(), cwd=ROOT, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited; see the logs in {self.workdir}")
            if self._ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the stack was not ready in {timeout}s; logs in {self.workdir}")

    def _ready(self) -> bool:
        try:
            web_ok = requests.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False
        worker_log = (self.workdir / "worker.log").read_text(errors="replace")
        return web_ok and "ready." in worker_log and len(self.web_pids()) == self.web_workers

    @property
    def redis_pid(self) -> int:
        assert self.redis is not None and self.redis.process is not None
        return self.redis.process.pid

    def web_pids(self) -> list[int]:
        return children(self.procs["web"].pid)

    def worker_pids(self) -> list[int]:
        """The Celery worker process (a threads pool runs in the one process)."""
        return [self.procs["worker"].pid, *children(self.procs["worker"].pid)]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
