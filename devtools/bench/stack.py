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
from typing import cast

import requests
from redis import Redis
from redis.cluster import RedisCluster

from devtools.redis_cluster import LocalCluster
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
    """Redis, web (gunicorn, ``workers`` processes) and one Celery worker, all on 127.0.0.1.

    By default one Redis holds the statistics (database 0) and the broker (database 1). With
    ``cluster`` the statistics live on a local Redis Cluster (3 masters, 3 replicas, no
    persistence, as the single Redis has none) and the broker on a Redis of its own; with
    ``own_broker`` too on one Redis, so that what the statistics store does is counted alone.
    ``gunicorn_args`` go to gunicorn through ``GUNICORN_CMD_ARGS`` (they override
    gunicorn.conf.py, which stays the one configuration: ``--worker-class sync``, say);
    :meth:`restart_web` starts the web tier again with other ones.
    """

    workdir: Path
    web_workers: int = 2
    cluster: bool = False
    own_broker: bool = False
    redis: RedisServer | None = None
    broker: RedisServer | None = None
    nodes: LocalCluster | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0
    gunicorn_args: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        """The statistics store: the Redis, or one node of the cluster."""
        if self.nodes is not None:
            return self.nodes.url
        assert self.redis is not None
        return self.redis.url

    @property
    def broker_url(self) -> str:
        if self.broker is not None:
            return self.broker.url
        assert self.redis is not None
        return f"redis://127.0.0.1:{self.redis.port}/1"

    def client(self) -> Redis:
        """A client of the statistics store (a cluster client with ``cluster``)."""
        if self.nodes is not None:
            # Storage is typed for redis.Redis; RedisCluster answers the same commands.
            return cast(Redis, RedisCluster.from_url(self.nodes.url))
        return Redis.from_url(self.redis_url)

    def masters(self) -> list[Redis]:
        """A plain client of every master of the statistics store (the one Redis, or each
        master of the cluster), for INFO and key sampling."""
        if self.nodes is not None:
            return self.nodes.masters_now()
        return [Redis.from_url(self.redis_url, decode_responses=True)]

    def store_pids(self) -> list[int]:
        """The statistics store's processes: the Redis, or every node of the cluster."""
        servers = self.nodes.nodes if self.nodes is not None else [self.redis]
        return [s.process.pid for s in servers if s is not None and s.process is not None]

    def env(self) -> dict[str, str]:
        # An outer GUNICORN_CMD_ARGS would override gunicorn.conf.py unseen: only gunicorn_args go.
        dropped = ("BANDIT_", "PROMETHEUS_", "GUNICORN_CMD_ARGS")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        if self.nodes is not None:
            env["BANDIT_REDIS_CLUSTER"] = "true"
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            REDIS_URL=self.redis_url, CELERY_BROKER_URL=self.broker_url,
            BANDIT_ENV="production", BANDIT_ADMIN_TOKEN=ADMIN_TOKEN,
            BANDIT_WORKER_METRICS_PORT=str(free_port()),
            PORT=str(self.port), BIND_HOST="127.0.0.1", WEB_CONCURRENCY=str(self.web_workers),
            PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "web-metrics"),
        )  # fmt: skip
        if self.gunicorn_args:
            env["GUNICORN_CMD_ARGS"] = self.gunicorn_args
        return env

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.cluster:
            self.nodes = LocalCluster(self.workdir / "cluster", appendonly=False).start()
        else:
            self.redis = RedisServer(data_dir=self.workdir / "redis").start()
        if self.cluster or self.own_broker:
            self.broker = RedisServer(data_dir=self.workdir / "broker").start()
        self.port = free_port()
        for name, command in procfile().items():
            self._spawn(name, command)
        self._wait_ready()
        return self

    def _spawn(self, name: str, command: str) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:  # the child keeps its copy
            self.procs[name] = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], env=self.env(), cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def restart_web(self, gunicorn_args: str) -> None:
        """Stop the web tier (gunicorn's graceful shutdown) and start it again, on the same
        port and Redis, with ``gunicorn_args``; returns once it is ready again.

        Raises:
            RuntimeError: it did not come back (its log is web.log in the workdir).
        """
        self._stop_proc(self.procs["web"])
        self.gunicorn_args = gunicorn_args
        self._spawn("web", procfile()["web"])
        self._wait_ready()

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

    def web_pids(self) -> list[int]:
        return children(self.procs["web"].pid)

    def worker_pids(self) -> list[int]:
        """The Celery worker process (a threads pool runs in the one process)."""
        return [self.procs["worker"].pid, *children(self.procs["worker"].pid)]

    @staticmethod
    def _stop_proc(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            self._stop_proc(proc)
        for server in (self.redis, self.broker, self.nodes):
            if server is not None:
                server.stop()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
