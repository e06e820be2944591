"""Run wrk (Debian's package; bin/install-system-deps installs it) and read its results."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    socket_errors: int
    non2xx: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    """The wrk binary.

    Raises:
        RuntimeError: wrk is not installed (run bin/install-system-deps).
    """
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: run bin/install-system-deps")
    return path


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    script: str = "report.lua",
    args: tuple[str, ...] = (),
) -> WrkResult:
    """Load ``url`` for ``seconds`` with ``connections`` connections (one wrk thread).

    Raises:
        RuntimeError: wrk failed or printed no result line.
    """
    return finish_wrk(start_wrk(url, seconds, connections, script, args))


def start_wrk(
    url: str, seconds: float, connections: int, script: str, args: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """Start wrk in the background (see :func:`finish_wrk`)."""
    command = [
        wrk_path(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(HERE / script), url, *args,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(proc: subprocess.Popen[str], interrupt: bool = False) -> WrkResult:
    """Wait for wrk (or stop it now with SIGINT, as Ctrl-C would) and read its result line.

    Raises:
        RuntimeError: wrk failed or printed no result line.
    """
    if interrupt:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith('{"requests"')]
    if not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stdout}\n{stderr}")
    raw = json.loads(lines[-1])
    return WrkResult(
        requests=raw["requests"], seconds=raw["duration_us"] / 1e6,
        socket_errors=raw["socket_errors"], non2xx=raw["non2xx"],
        p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
    )  # fmt: skip
