"""Where and when a generated document was produced: machine, commit, date, versions."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    """Short hash of HEAD, with ``-dirty`` if the working tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], check=False).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def versions(packages: tuple[str, ...] = ("numpy", "scipy", "mabwiser")) -> str:
    """``python X; numpy Y; ...`` for the given installed packages."""
    parts = [f"python {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return "; ".join(parts)


def header_lines(command: str) -> list[str]:
    """Markdown bullet lines: command, machine, commit, date, versions."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- command: `{command}`",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}",
        f"- commit: `{commit()}`",
        f"- date: {now}",
        f"- versions: {versions()}",
    ]
