"""``bin/run`` (devtools.run): its name in --help, and one instance per state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devtools.redis_server import free_port
from tests.processes import ROOT, Proc, wait_for

pytestmark = pytest.mark.e2e

RECOMMENDATIONS = "postbandit_recommendations_total"


def run_env() -> dict[str, str]:
    """The environment of a developer's shell without our variables: an embedded Redis, and no
    worker metrics port (9100 may be anyone's on this machine)."""
    ours = ("BANDIT_", "PROMETHEUS_", "REDIS_", "CELERY_", "WEB_", "PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return {**env, "BANDIT_WORKER_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}


def start_run(var: Path, port: int, log: Path, *more: str) -> Proc:
    args = [sys.executable, "-m", "devtools.run", "--var-dir", str(var), "--port", str(port)]
    return Proc(log.stem, [*args, "--no-demo", *more], run_env(), log).start()


def served(base: str) -> float:
    """The web tier's count of served recommendations, from its /metrics."""
    text = requests.get(f"{base}/metrics", timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith(RECOMMENDATIONS)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def first(tmp_path: Path) -> Iterator[tuple[Proc, str]]:
    """A running bin/run on its own state directory, answering on its port."""
    port = free_port()
    proc = start_run(tmp_path / "var", port, tmp_path / "first.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(base) or not proc.alive(), 60, "the first bin/run to answer")
        assert proc.alive(), proc.output()
        yield proc, base
    finally:
        proc.stop()


def test_help_names_the_program_bin_run() -> None:
    done = subprocess.run([sys.executable, "-m", "devtools.run", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.startswith("usage: bin/run ")
    assert "--var-dir" in done.stdout
    assert "exec .venv/bin/python -m devtools.run" in (ROOT / "bin" / "run").read_text()


@pytest.mark.parametrize("port", ["abc", "0", "65536", " 80"])
def test_a_bad_port_is_refused_naming_it(port: str) -> None:
    env = {**run_env(), "PORT": port}
    done = subprocess.run([sys.executable, "-m", "devtools.run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert f"{port!r} is not a port in [1, 65535] (--port or PORT)" in done.stderr


def test_a_second_instance_is_refused_and_leaves_the_first_untouched(
    first: tuple[Proc, str], tmp_path: Path
) -> None:
    proc, base = first
    var = tmp_path / "var"
    assert requests.get(f"{base}/v1/recommendations?user_id=u", timeout=5).status_code == 200
    before = served(base)
    state = set(var.rglob("*"))  # Redis data, the web workers' metric files, the lock
    second = start_run(var, free_port(), tmp_path / "second.log")
    assert second.process is not None
    assert second.process.wait(timeout=60) != 0
    assert f"another instance (pid {proc.pid}, http://127.0.0.1:{base.rsplit(':', 1)[1]})" in (
        second.output()
    )
    assert "embedded redis-server" not in second.output()  # refused before it started anything
    # Nothing deleted (the first's workers may add metric files meanwhile).
    assert state <= set(var.rglob("*"))
    assert requests.get(f"{base}/v1/recommendations?user_id=u", timeout=5).status_code == 200
    assert served(base) == before + 1  # the first's metrics still count


def test_the_lock_goes_with_the_instance(first: tuple[Proc, str], tmp_path: Path) -> None:
    proc, _ = first
    proc.stop()
    port = free_port()
    again = start_run(tmp_path / "var", port, tmp_path / "again.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(base) or not again.alive(), 60, "bin/run to start again")
        assert again.alive(), again.output()
    finally:
        again.stop()


@pytest.mark.cluster
def test_bin_run_cluster_serves_on_a_local_cluster_and_a_separate_broker(tmp_path: Path) -> None:
    port = free_port()
    proc = start_run(tmp_path / "var", port, tmp_path / "cluster.log", "--cluster")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(base) or not proc.alive(), 90, "bin/run --cluster to answer")
        assert proc.alive(), proc.output()
        assert "redis cluster at redis://127.0.0.1:" in proc.output()
        assert "; broker redis-server at redis://127.0.0.1:" in proc.output()
        admin = {"Authorization": "Bearer dev-admin-token"}
        put = requests.put(f"{base}/v1/posts/p1", json={"forum_id": "f1"}, headers=admin, timeout=5)
        assert put.status_code == 201, put.text
        wait_for(lambda: slate_items(base) == ["p1"], 30, "the registered post in a slate")
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
        stores = (tmp_path / "var" / "service.env").read_text().splitlines()
        assert {line.split("=", 1)[0] for line in stores} == {
            "REDIS_URL", "BANDIT_REDIS_CLUSTER", "CELERY_BROKER_URL"}  # fmt: skip
    finally:
        proc.stop()


def test_the_flask_commands_find_the_stores_bin_run_started(
    first: tuple[Proc, str], tmp_path: Path
) -> None:
    """The README's `env $(cat var/service.env) flask --app app ...` reaches bin/run's Redis."""
    [line] = (tmp_path / "var" / "service.env").read_text().splitlines()
    name, url = line.split("=", 1)
    assert name == "REDIS_URL" and url.startswith("redis://127.0.0.1:")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "export-decisions", "-o", "-"],
        env={**os.environ, name: url}, capture_output=True, text=True, timeout=60, cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "exported" in result.stderr


def slate_items(base: str) -> list[str]:
    body = requests.get(f"{base}/v1/recommendations?user_id=u", timeout=5).json()
    return [item["post_id"] for item in body["items"]]
