"""Check a process's settings, then become it: ``python -m core.preflight ROLE PROGRAM ARGS...``.

The Procfile starts the web tier through this: gunicorn reads ``WEB_CONCURRENCY`` with ``int()``
when it is imported, before its configuration file runs, so ``WEB_CONCURRENCY=abc`` would stop
it with a traceback of gunicorn's instead of a line naming the variable. Here every variable of
the role (``web``: :class:`~core.settings.ServerSettings` too) is validated first; on success
the program replaces this process (same pid, signals and exit code), else the process exits 1
with the refusal. The program is looked up beside this interpreter first (a virtualenv's
console scripts sit there), then on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from core.settings import ConfigError, Role, ServerSettings, Settings


def check(role: Role) -> None:
    """Raise :class:`ConfigError` unless the environment holds valid settings for ``role``."""
    if role == "web":
        ServerSettings.from_env()
    Settings.from_env(role=role)


def main(argv: list[str]) -> None:
    """Validate, then exec ``argv[1:]``; exit 2 on a usage error, 1 on a refusal."""
    if len(argv) < 2 or argv[0] not in ("web", "worker"):
        print("usage: python -m core.preflight {web,worker} PROGRAM [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    role: Role = "web" if argv[0] == "web" else "worker"
    program, args = argv[1], argv[2:]
    try:
        check(role)
    except ConfigError as exc:
        raise SystemExit(f"{role}: {exc}") from None
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(program, path=path)
    if found is None:
        raise SystemExit(f"{role}: {program} not found beside {sys.executable} nor on PATH")
    os.execv(found, [program, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
