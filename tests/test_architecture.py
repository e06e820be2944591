"""The house, one way round: what each process imports (the contracts themselves are in
pyproject.toml and run by bin/test through lint-imports)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


def loaded_modules(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after ``statement``."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_a_web_process_loads_no_decision_file_reader() -> None:
    """pyarrow and pandas (about 75 MB of a web process's memory, docs/benchmarks.md) are for
    the commands and workers that read or write decision files, not for serving."""
    loaded = loaded_modules(
        "import os\nos.environ['BANDIT_ENV'] = 'development'\n"
        "from app import create_app\ncreate_app()"
    )
    assert {"app", "flask", "core"} <= loaded
    assert not loaded & {"pyarrow", "pandas"}


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


# The web tier and the worker stay easy to read: modules named after what they own, short
# functions (docstrings included).
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40
ROOT = Path(__file__).resolve().parent.parent


def _sources() -> list[Path]:
    return sorted(p for package in ("app", "workers") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_of_web_and_worker_stay_short(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long
