"""The house, one way round: what each process imports (the contracts themselves are in
pyproject.toml and run by bin/test through lint-imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_modules(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after ``statement``."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in out.split()}


@pytest.mark.parametrize("statement", ["import workers.tasks", "import workers.main"])
def test_the_worker_loads_no_flask_and_no_web_app(statement: str) -> None:
    loaded = loaded_modules(statement)
    assert "core" in loaded  # the statement ran and loaded the shared foundation
    assert not loaded & {"flask", "werkzeug", "app"}


def test_the_shared_foundation_loads_no_flask() -> None:
    loaded = loaded_modules(
        "import core.settings, core.storage, core.metrics, core.logs, core.events, core.queue"
    )
    assert "redis" in loaded
    assert not loaded & {"flask", "werkzeug", "app", "workers"}


def test_the_algorithms_load_nothing_of_ours_nor_any_service_library() -> None:
    loaded = loaded_modules("import bandits")
    assert "numpy" in loaded
    assert not loaded & {"app", "core", "workers", "flask", "redis", "celery", "prometheus_client"}
