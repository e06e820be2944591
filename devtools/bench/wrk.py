"""Run wrk (Debian's package; bin/install-system-deps installs it) and read its results."""

from __future__ import annotations

import json
import shutil
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
    threads: int = 1,
) -> WrkResult:
    """Load ``url`` for ``seconds`` with ``connections`` keep-alive connections.

    Raises:
        RuntimeError: wrk failed or printed no result line.
    """
    command = [
        wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(HERE / script), url, *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"requests"')]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(lines[-1])
    return WrkResult(
        requests=raw["requests"], seconds=raw["duration_us"] / 1e6,
        socket_errors=raw["socket_errors"], non2xx=raw["non2xx"],
        p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
    )  # fmt: skip
