"""Where a web worker's time goes under recommendation load, sampled with py-spy.

Two samplings of one gunicorn worker while wrk loads ``GET /v1/recommendations``: the
samples in which a thread holds the GIL (CPU spent in Python and in C called from it; numpy
releases the GIL while it draws random numbers, so the Thompson draw is under-counted there),
and wall-clock samples of the serving thread, waits included (for Redis replies, for the next
connection). Each sample is put in the first of :data:`PARTS` whose frame is on its stack,
so the shares add up to 100 %; then the largest frames inside ``recommend`` are listed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
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


# (part of the work, a frame that identifies it), checked in this order.
PARTS = (
    ("snapshot refresh (background thread)", "SnapshotCache._run"),
    (
        "slate writer: served slates and decision entries, batched (background thread)",
        "SlateWriter._run",
    ),
    ("Redis read of the request (posts to hide)", "Serving.to_hide"),
    ("decision-log entry (scores as JSON)", "fields (app/decisions.py)"),
    ("Thompson draw and ranking (pruned draw or policy.select)", "Snapshot.select"),
    ("policy.select (bandits/, Thompson draw and ranking)", "Policy.select"),
    ("eligible count for the decision log", "eligible_pool"),
    ("request log line (JSON)", "_log_slate"),
    ("metrics (prometheus-client, multiprocess files)", "prometheus_client/"),
    ("rest of service.recommend", "recommend (app/service.py)"),
    ("query validation (pydantic)", "model_validate"),
    ("response JSON (jsonify)", "jsonify"),
    ("rest of Flask and werkzeug", "Flask.__call__"),
    ("idle: waiting for the next connection", "SyncWorker.wait"),
    ("gunicorn: accept, HTTP parsing, socket writes", "gunicorn/"),
)


def samples(raw: Path, only: str = "") -> Iterator[tuple[list[str], int]]:
    """(frame names root first, count) of each stack of a raw py-spy file; with ``only``,
    just the stacks that contain that text."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if only in stack:
            yield [frame_name(f) for f in stack.split(";")], int(count)


def parts(raw: Path, only: str = "") -> tuple[int, list[tuple[str, float]]]:
    """Total samples and the share of each of :data:`PARTS` (and "other"), largest first."""
    found: Counter[str] = Counter()
    for frames, count in samples(raw, only):
        joined = ";".join(frames)
        found[next((name for name, key in PARTS if key in joined), "other")] += count
    total = sum(found.values())
    return total, [(name, n / total) for name, n in found.most_common()]


def inside(raw: Path, frame: str, only: str = "", top: int = TOP) -> list[tuple[str, float]]:
    """The ``top`` frames called (at any depth) from ``frame``, by share of the samples (of
    the stacks that contain ``only``)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in samples(raw, only):
        total += count
        if frame in frames:
            for name in set(frames[frames.index(frame) + 1 :]):
                inclusive[name] += count
    return [(name, n / total) for name, n in inclusive.most_common(top)]


def run(stack: Stack, candidates: int, seconds: float, label: str, command: str) -> str:
    """Profile one web worker under load and return the Markdown section."""
    grow(stack, Catalogue.of(stack.client()), candidates)
    pid = stack.web_pids()[0]
    where = " (statistics on a local 3-master Redis Cluster)" if stack.cluster else ""
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
        total, shares = parts(raw, only)
        detail = inside(raw, "recommend (app/service.py)", only, 12)
        tables += [
            f"**{title}** ({total:,} samples)", "",
            "| share | part of the work |", "|---:|---|",
            *[f"| {share:.0%} | {name} |" for name, share in shares], "",
            "Largest frames inside `service.recommend` (inclusive, share of the same samples):",
            "",
            "| share | frame |", "|---:|---|",
            *[f"| {share:.0%} | `{name}` |" for name, share in detail], "",
        ]  # fmt: skip
    return (
        "\n".join(
            [
                f"## Profile of the recommendation path ({label})",
                "",
                f"py-spy, 250 samples/s for {seconds:.0f} s, of one of the 2 gunicorn "
                f"workers{where} "
                f"while wrk (8 connections) loads `GET /v1/recommendations?n=10` with "
                f"{candidates:,} live candidates. Machine: {machine()}, load {load}. "
                f"Commit `{commit()}`. Command: `{command}`.",
                "",
                *tables,
            ]
        )
        + "\n"
    )
