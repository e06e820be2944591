"""Real service processes for tests: gunicorn web and Celery worker, on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

import psutil
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis.cluster import RedisCluster

from core.queue import QUEUE
from core.storage import Keys
from core.storage.journal import Journal
from devtools.bench.probes import SNAPSHOT_METRIC
from devtools.redis_server import RedisServer, free_port
from devtools.run import commands

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_fresh_snapshots(
    base: str, after: float, workers: int = 2, timeout: float = 30
) -> None:
    """Wait until each of the ``workers`` web processes holds a snapshot read after ``after``:
    what was written before ``after`` (a registered post, say) is then served by all of them.
    Each process exports when its snapshot began reading Redis."""

    def fresh() -> bool:
        text = requests.get(f"{base}/metrics", timeout=5).text
        times = [sample.value for family in text_string_to_metric_families(text)
                 if family.name == SNAPSHOT_METRIC for sample in family.samples]  # fmt: skip
        return len(times) >= workers and min(times) >= after

    wait_for(fresh, timeout, f"every web process's snapshot read after {after}")


def drained(stats: redis.Redis, broker: redis.Redis, prefix: str = "pb") -> bool:
    """Whether nothing is left to apply or to deliver again: the journal holds no batch, and the
    broker has no message queued, nor delivered and unacknowledged (so none can come back after
    the visibility timeout). The broker is read in one transaction, as a redelivery moves a
    message from its unacknowledged set to the queue in one."""
    if not Journal(stats, Keys(prefix)).is_empty():
        return False
    queued, unacked = broker.pipeline(transaction=True).llen(QUEUE).hlen("unacked").execute()
    return queued == unacked == 0


def wait_drained(
    base: str, stats: redis.Redis, broker: redis.Redis, timeout: float, prefix: str = "pb"
) -> None:
    """Send a sentinel batch (an unknown request id: it counts nothing) and wait until it and
    everything accepted before it has been applied and acknowledged (:func:`drained`).

    The sentinel proves the wait: a message that a (single) worker had popped from the queue
    but not yet recorded as unacknowledged is recorded before the sentinel is popped, and the
    sentinel leaves the journal only once applied.
    """
    body = {"events": [{"request_id": "sentinel", "post_id": "sentinel"}]}
    response = requests.post(f"{base}/v1/impressions", json=body, timeout=30)
    assert response.status_code == 202, response.text
    wait_for(lambda: drained(stats, broker, prefix), timeout, "the journal and the broker to drain")


@dataclass
class Proc:
    """A child process with its output in a log file (shown when a test fails)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signal the whole process group and wait; SIGKILL if it does not exit in time."""
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_env(redis_url: str, broker_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANDIT_", "PROMETHEUS_"))}
    env.update(
        REDIS_URL=redis_url, CELERY_BROKER_URL=broker_url, PYTHONUNBUFFERED="1",
        BANDIT_REFRESH_SECONDS="0.2",
        BANDIT_WORKER_METRICS_PORT="0", BANDIT_LOG_LEVEL="INFO",
        BANDIT_SNAPSHOT_DIR=str(tmp / "snapshots"),
    )  # fmt: skip
    env.update(extra)
    return env


def web_command() -> list[str]:
    """The Procfile's web process, from this virtualenv (as bin/run starts it)."""
    return commands(BIN)["web"]


def worker_command(name: str) -> list[str]:
    """The Procfile's worker process, from this virtualenv, with a node name of its own and
    without the chatter between workers that tests do not use."""
    return [*commands(BIN)["worker"], "--hostname", f"{name}-{free_port()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip


def start_web(env: dict[str, str], tmp: Path, workers: int = 2) -> tuple[Proc, str]:
    """gunicorn with the production config on a free loopback port; waits for /healthz."""
    port = free_port()
    env = {
        **env,
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "web-metrics"),
    }
    proc = Proc("web", web_command(), env, tmp / "web.log").start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(base) or not proc.alive(), 30, "gunicorn to answer /healthz")
    assert proc.alive(), proc.output()
    return proc, base


def start_worker(env: dict[str, str], tmp: Path, name: str = "worker") -> Proc:
    """A Celery worker process (threads pool, as in the Procfile); waits until it consumes."""
    proc = Proc(name, worker_command(name), env, tmp / f"{name}.log").start()
    wait_for(lambda: "ready." in proc.output() or not proc.alive(), 30, "celery worker ready")
    assert proc.alive(), proc.output()
    return proc


def stop_all(procs: Iterable[Proc]) -> None:
    """Stop every process, then print the tail of each log (pytest shows it for a failed test)."""
    procs = list(procs)
    for proc in procs:
        proc.stop()
    for proc in procs:
        print(f"--- {proc.name} log (tail) ---\n{proc.output()[-4000:]}")


class WebAndWorker(NamedTuple):
    web: Proc
    worker: Proc
    base: str  # the web tier's URL


@contextmanager
def web_and_worker(env: dict[str, str], tmp: Path, web_workers: int = 2) -> Iterator[WebAndWorker]:
    """gunicorn (``web_workers`` workers) and one Celery worker, both with ``env``, for the
    length of the block; stopped at its end, whatever happens."""
    procs: list[Proc] = []
    try:
        web, base = start_web(env, tmp, workers=web_workers)
        procs.append(web)
        procs.append(start_worker(env, tmp))
        yield WebAndWorker(web, procs[1], base)
    finally:
        stop_all(procs)


def healthy(base: str) -> bool:
    """Whether the server at ``base`` answers /healthz with 200 now."""
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class Stack:
    """gunicorn and Celery workers on a Redis of the test's own (statistics in db 0, broker in
    db 1), so that the test may stop, hang, kill and restart any part of it; with a
    ``cluster_url``, statistics on that Redis Cluster instead (the broker stays on the Redis)."""

    redis: RedisServer
    tmp: Path
    cluster_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    base: str = ""
    web: Proc | None = None
    workers: list[Proc] = field(default_factory=list)

    def start(self, web_workers: int = 2, workers: int = 1, **env: str) -> Stack:
        broker_url = self.redis.url.rsplit("/", 1)[0] + "/1"
        if self.cluster_url:
            env = {"BANDIT_REDIS_CLUSTER": "true", **env}
        self.env = service_env(self.cluster_url or self.redis.url, broker_url, self.tmp,
                               BANDIT_ADMIN_TOKEN=ADMIN_TOKEN, BANDIT_SEED="11", **env)  # fmt: skip
        self.web, self.base = start_web(self.env, self.tmp, workers=web_workers)
        for _ in range(workers):
            self.add_worker()
        return self

    def statistics(self) -> redis.Redis:
        """A client of the statistics (a cluster client on a cluster); close it after use."""
        if self.cluster_url:
            return cast(redis.Redis, RedisCluster.from_url(self.cluster_url))
        return redis.Redis.from_url(self.redis.url)

    def add_worker(self, **env: str) -> Proc:
        name = f"worker{len(self.workers)}"
        worker = start_worker({**self.env, **env}, self.tmp, name=name)
        self.workers.append(worker)
        return worker

    def web_pids(self) -> set[int]:
        """The gunicorn master and its workers."""
        assert self.web is not None
        master = psutil.Process(self.web.pid)
        return {master.pid} | {child.pid for child in master.children()}

    def stop(self) -> None:
        stop_all(p for p in (self.web, *self.workers) if p is not None)


ADMIN_TOKEN = "stack-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
