"""Start-up refusals: the Procfile's web and worker, as real gunicorn and Celery processes, exit
non-zero within seconds with a message naming the variable, for every value that would let
them start and then misbehave; and the Procfile's command lines are the ones every runner uses.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.redis_server import RedisServer, free_port
from devtools.run import BIN, PROCFILE, commands
from tests.processes import ROOT, Proc, service_env, web_command, worker_command
from tests.test_architecture import loaded_modules

pytestmark = pytest.mark.e2e

EXIT_WITHIN = 60  # seconds; a refusal takes one or two, this bounds a wait on a loaded machine
PRODUCTION = {"BANDIT_ENV": "production", "BANDIT_ADMIN_TOKEN": "a-production-admin-token"}

# (variables, the variable the refusal must name), for web and worker alike.
BOTH = [
    ({"BANDIT_REFRESH_SECONDS": "nan"}, "BANDIT_REFRESH_SECONDS"),
    ({"BANDIT_REFRESH_SECONDS": "inf"}, "BANDIT_REFRESH_SECONDS"),
    ({"BANDIT_REDIS_TIMEOUT": "1e308"}, "BANDIT_REDIS_TIMEOUT"),
    ({"BANDIT_ATTRIBUTION_SECONDS": "0"}, "BANDIT_ATTRIBUTION_SECONDS"),
    ({"BANDIT_POST_TTL_SECONDS": "0"}, "BANDIT_POST_TTL_SECONDS"),
    ({"BANDIT_HALF_LIFE_SECONDS": "30"}, "BANDIT_HALF_LIFE_SECONDS"),
    ({"BANDIT_HALF_LIFE_SECONDS": "1.5"}, "BANDIT_HALF_LIFE_SECONDS"),
    ({"BANDIT_WORKER_METRICS_PORT": "99999"}, "BANDIT_WORKER_METRICS_PORT"),
    ({"BANDIT_ENV": "Production"}, "BANDIT_ENV"),
    ({"BANDIT_ENV": "PRODUCTION"}, "BANDIT_ENV"),
    ({"BANDIT_ENV": "prod"}, "BANDIT_ENV"),
    ({"BANDIT_LOG_LEVEL": "trace"}, "BANDIT_LOG_LEVEL"),
    ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": " "}, "BANDIT_ADMIN_TOKEN"),
    ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": "dev-admin-token "}, "BANDIT_ADMIN_TOKEN"),
    ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": "dev-admin-token"}, "BANDIT_ADMIN_TOKEN"),
    ({**PRODUCTION, "BANDIT_ADMIN_TOKEN": "short-token"}, "BANDIT_ADMIN_TOKEN"),
    ({**PRODUCTION, "BANDIT_APP_TOKEN": "short-token"}, "BANDIT_APP_TOKEN"),
]
WEB_ONLY = [
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
    ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY"),
    ({"BANDIT_ENV": "production"}, "BANDIT_ADMIN_TOKEN"),
]


@pytest.fixture
def base_env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    """What the test stacks run with: were a bad value accepted, the process would start."""
    url = f"redis://127.0.0.1:{redis_server.port}"
    return service_env(f"{url}/0", f"{url}/1", tmp_path)


def web_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` with what gunicorn reads, two workers on a free loopback port."""
    return {"PORT": str(free_port()), "BIND_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "web-metrics"), **env}  # fmt: skip


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def refusal(proc: Proc) -> str:
    """Wait for ``proc`` to exit; its output, after checking that the exit code is non-zero."""
    assert proc.process is not None
    try:
        code = proc.process.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.name} still running:\n{proc.output()[-2000:]}") from None
    assert code != 0, proc.output()
    return proc.output()


@pytest.mark.parametrize(("bad", "variable"), BOTH, ids=[str(b) for b, _ in BOTH])
def test_web_and_worker_refuse_to_start(
    base_env: dict[str, str], tmp_path: Path, bad: dict[str, str], variable: str
) -> None:
    env = {**base_env, **bad}
    web = Proc("web", web_command(), web_env(env, tmp_path), tmp_path / "web.log").start()
    worker = Proc("worker", worker_command("worker"), env, tmp_path / "worker.log").start()
    for proc in (web, worker):
        assert variable in refusal(proc)


@pytest.mark.parametrize(("bad", "variable"), WEB_ONLY, ids=[str(b) for b, _ in WEB_ONLY])
def test_web_refuses_to_start(
    base_env: dict[str, str], tmp_path: Path, bad: dict[str, str], variable: str
) -> None:
    env = web_env({**base_env, **bad}, tmp_path)
    web = Proc("web", web_command(), env, tmp_path / "web.log").start()
    out = refusal(web)
    assert variable in out
    assert "Traceback" not in out  # one line, not a stack of frames to read it from


def test_worker_refuses_a_metrics_port_in_use(
    base_env: dict[str, str], tmp_path: Path, busy_port: int
) -> None:
    env = {**base_env, "BANDIT_WORKER_METRICS_HOST": "127.0.0.1",
           "BANDIT_WORKER_METRICS_PORT": str(busy_port)}  # fmt: skip
    out = refusal(Proc("worker", worker_command("worker"), env, tmp_path / "w.log").start())
    assert f"BANDIT_WORKER_METRICS_PORT={busy_port}" in out
    assert "Address already in use" in out


def test_the_runners_start_the_procfiles_command_lines() -> None:
    lines = dict(line.split(": ", 1) for line in PROCFILE.read_text().splitlines() if line)
    assert set(lines) == set(commands()) == {"web", "worker"}
    for name, argv in commands().items():
        program = Path(argv[0])
        assert program.parent == BIN and program.exists()
        assert [program.name, *argv[1:]] == shlex.split(lines[name])
    assert commands()["web"][1:5] == ["-m", "core.preflight", "web", "gunicorn"]
    assert web_command() == commands()["web"]
    assert worker_command("w")[: len(commands()["worker"])] == commands()["worker"]


def test_gunicorns_master_loads_no_metrics_and_no_app() -> None:
    conf = ROOT / "gunicorn.conf.py"
    loaded = loaded_modules(
        "import os, runpy\n"
        "os.environ.update(WEB_CONCURRENCY='1', BANDIT_ENV='development')\n"
        f"runpy.run_path({str(conf)!r})"
    )
    assert {"core", "pydantic", "bandits"} <= loaded
    assert not loaded & {"prometheus_client", "app", "workers", "flask", "redis", "celery"}


def test_a_server_setting_refusal_is_one_line_without_a_traceback() -> None:
    env = {"PATH": "", "PORT": "80.5", "WEB_CONCURRENCY": "1"}
    args = [sys.executable, str(ROOT / "gunicorn.conf.py")]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=EXIT_WITHIN, check=False)  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr == "gunicorn.conf.py: PORT must be a whole number in [1, 65535], got '80.5'\n"
    )


HOOKS = """
import os, runpy
os.environ.update(WEB_CONCURRENCY="1", BANDIT_ENV="development")
import gevent
conf = runpy.run_path({conf!r})
Worker = type("Worker", (), {{"__module__": {module!r}}})
worker, req, ran = Worker(), type("Req", (), {{}})(), []
conf["pre_request"](worker, req)
gevent.spawn(ran.append, "other greenlet")
conf["post_request"](worker, req, {{}}, None)
print(ran)
"""


@pytest.mark.parametrize(
    ("module", "ran"),
    [("gunicorn.workers.ggevent", "['other greenlet']"), ("gunicorn.workers.sync", "[]")],
)
def test_after_a_request_a_gevent_worker_runs_its_other_ready_greenlets_first(
    module: str, ran: str
) -> None:
    """gunicorn.conf.py's post_request yields under gevent (the p99 it cut is in
    docs/benchmarks.md), and only there: a sync worker has no hub to yield to."""
    code = HOOKS.format(conf=str(ROOT / "gunicorn.conf.py"), module=module)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=EXIT_WITHIN, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ran
