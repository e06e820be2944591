"""Flask CLI commands: ``flask --app app <command>``."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import IO, Any

import click
from flask import Flask

from app import decisions, demo
from app.runtime import runtime

# The streams are keyed by unix milliseconds: a time outside these cannot be read from them.
EARLIEST = 0.0  # 1970-01-01T00:00:00Z
LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z


class Moment(click.ParamType):
    """A point in time from 1970 to 9999: unix seconds, or an ISO 8601 date-time (UTC unless
    it says otherwise). Anything else is a usage error naming the option."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        seconds = value if isinstance(value, float) else self._seconds(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number", param, ctx)
        if seconds < EARLIEST:
            self.fail(f"{value!r} is before 1970-01-01T00:00:00Z", param, ctx)
        if seconds > LATEST:
            self.fail(f"{value!r} is after 9999-12-31T23:59:59Z", param, ctx)
        return seconds

    def _seconds(
        self, value: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return float(value)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(value)
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            self.fail(f"{value!r} is neither unix seconds nor an ISO 8601 date-time", param, ctx)


def init_app(app: Flask) -> None:
    @app.cli.command("load-demo")
    @click.option("--posts-per-forum", default=8, show_default=True, type=click.IntRange(1, 1000))
    def load_demo(posts_per_forum: int) -> None:
        """Register a small demo catalogue (a few forums and posts)."""
        count = demo.load(runtime(), posts_per_forum)
        click.echo(f"registered {count} demo posts")

    @app.cli.command("export-decisions")
    @click.option("--since", type=Moment(), help="first serving time [default: 24 h ago]")
    @click.option("--until", type=Moment(), help="last serving time [default: now]")
    @click.option("--output", "-o", type=click.File("w"), default="-", show_default=True)
    def export_decisions(since: float | None, until: float | None, output: IO[str]) -> None:
        """Write served slates with their impressions and clicks as JSON lines.

        One line per decision (see app/decisions.py for the fields); ``final`` marks decisions
        whose outcomes can no longer change (attribution window and grace over).
        """
        rt, now = runtime(), time.time()
        summary = decisions.export(
            rt.storage.decisions,
            now - 86_400 if since is None else since,
            now if until is None else until,
            rt.settings.event_keep_seconds,
            now,
            output,
        )
        click.echo(f"exported {summary.decisions} decisions ({summary.final} final)", err=True)
        if summary.outcomes_trimmed:
            click.echo(
                "warning: the outcome stream was trimmed after --since; the oldest decisions "
                "may lack outcomes (raise BANDIT_DECISION_LOG_MAXLEN or export more often)",
                err=True,
            )
