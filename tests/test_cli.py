"""The CLI refuses bad arguments as usage errors (exit 2, naming the option), never a traceback."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from flask import Flask

from tests.processes import BIN, ROOT, service_env


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("--since", "yesterday", "neither unix seconds nor an ISO 8601 date-time"),
        ("--since", "2026-13-01", "neither unix seconds nor an ISO 8601 date-time"),
        ("--since", "", "neither unix seconds nor an ISO 8601 date-time"),
        ("--since", "-5", "before 1970"),
        ("--until", "-1", "before 1970"),
        ("--since", "-0.001", "before 1970"),
        ("--since", "1969-12-31T23:59:59Z", "before 1970"),
        ("--until", "0001-01-01T00:00:00+14:00", "before 1970"),
        ("--since", "1e30", "after 9999"),
        ("--until", "253402300800", "after 9999"),
        ("--since", "nan", "not a number"),
        ("--until", "NaN", "not a number"),
        ("--since", "inf", "after 9999"),
        ("--until", "-inf", "before 1970"),
        ("--since", "1e309", "after 9999"),
    ],
)
def test_export_refuses_a_time_out_of_range(app: Flask, option: str, value: str, text: str) -> None:
    result = app.test_cli_runner().invoke(args=["export-decisions", option, value])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"Invalid value for '{option}'" in result.output
    assert text in result.output


@pytest.mark.parametrize("value", ["0", "1970-01-01T00:00:00Z", "253402300799", "9999-12-31"])
def test_export_takes_the_edges_of_the_range(app: Flask, value: str) -> None:
    result = app.test_cli_runner().invoke(args=["export-decisions", "--since", value])
    assert result.exit_code == 0, result.output


def test_the_real_cli_prints_a_usage_error_not_a_traceback(
    redis_url: str, broker_url: str, tmp_path: Any
) -> None:
    env = service_env(redis_url, broker_url, tmp_path)
    done = subprocess.run(
        [str(BIN / "flask"), "--app", "app", "export-decisions", "--since", "-5"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "Invalid value for '--since'" in done.stderr
