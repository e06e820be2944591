"""Where a web worker's time goes under recommendation load, sampled with py-spy.

Two samplings of one gunicorn worker while wrk loads ``GET /v1/recommendations``: the
samples in which a thread holds the GIL (CPU spent in Python and in C called from it), and
wall-clock samples of every thread including waits (for Redis replies, for the socket).
Frames are shown inclusive (a function with everything it calls), largest first.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from devtools.bench.catalogue import Catalogue
from devtools.bench.phases import RECOMMEND, grow
from devtools.bench.report import commit, machine
from devtools.bench.stack import Stack, loadavg
from devtools.bench.wrk import run_wrk

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
TOP = 22


def py_spy() -> str:
    """The py-spy binary of this environment (a dev requirement).

    Raises:
        RuntimeError: py-spy is not installed (bin/setup --dev installs it).
    """
    path = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if path is None:
        raise RuntimeError("py-spy is not installed: run bin/setup --dev")
    return path


def record(pid: int, seconds: float, out: Path, mode: str) -> None:
    subprocess.run(
        [py_spy(), "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate",
         "250", "--format", "raw", "--output", str(out), "--nonblocking", mode],
        check=True, capture_output=True,
    )  # fmt: skip


def frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"].split("site-packages/")[-1]
    path = re.sub(r"^.*/(app|bandits|workers)/", r"\1/", path)
    return f"{match['func']} ({path})"


def summarize(raw: Path, only: str = "", top: int = TOP) -> tuple[int, list[tuple[str, float]]]:
    """Total samples and the ``top`` frames by inclusive share (roots of every stack dropped);
    with ``only``, just the stacks that contain that text."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if only not in stack:
            continue
        total += int(count)
        for name in {frame_name(f) for f in stack.split(";")}:
            inclusive[name] += int(count)
    shares = [(name, n / total) for name, n in inclusive.most_common() if n < 0.97 * total]
    return total, shares[:top]


def run(stack: Stack, candidates: int, seconds: float, label: str, command: str) -> str:
    """Profile one web worker under load and return the Markdown section."""
    grow(stack, Catalogue.connect(stack.redis_url), candidates)
    pid = stack.web_pids()[0]
    load = loadavg()
    tables = []
    modes = (
        ("--gil", "", "CPU: samples in which a thread holds the GIL"),
        ("--idle", "gunicorn/workers/", "wall clock of the serving thread, waits included"),
    )
    for mode, only, title in modes:
        raw = stack.workdir / f"profile{mode}.txt"
        load_thread = threading.Thread(target=run_wrk, args=(
            f"{stack.base}/", seconds + 3, 8, "report.lua", (RECOMMEND,)))  # fmt: skip
        load_thread.start()
        time.sleep(1)
        record(pid, seconds, raw, mode)
        load_thread.join()
        total, shares = summarize(raw, only)
        tables += [f"**{title}** ({total:,} samples)", "", "| share | frame |", "|---:|---|",
                   *[f"| {share:.0%} | `{name}` |" for name, share in shares], ""]  # fmt: skip
    return (
        "\n".join(
            [
                f"## Profile of the recommendation path ({label})",
                "",
                f"py-spy, 250 samples/s for {seconds:.0f} s, of one of the 2 gunicorn workers "
                f"while wrk (8 connections) loads `GET /v1/recommendations?n=10` with "
                f"{candidates:,} live candidates. Machine: {machine()}, load {load}. "
                f"Commit `{commit()}`. Command: `{command}`.",
                "",
                *tables,
            ]
        )
        + "\n"
    )
