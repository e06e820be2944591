"""Flask CLI commands: ``flask --app app <command>``."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from flask import Flask
from flask.cli import with_appcontext

from app import decisions, demo, experiment_results
from app.errors import NotFound
from app.runtime import runtime
from core.experiments.statistics import render_table

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

    app.cli.add_command(export_decisions)
    app.cli.add_command(experiment_report)


@click.command("experiment-report")
@with_appcontext
@click.argument("experiment_id")
def experiment_report(experiment_id: str) -> None:
    """Print an experiment's results per variant, each variant against the control, and the
    sample-ratio check (the text form of GET /v1/experiments/ID/results)."""
    try:
        result, status = experiment_results.experiment_result(runtime(), experiment_id)
    except NotFound as exc:
        raise click.BadParameter(str(exc), param_hint="EXPERIMENT_ID") from exc
    click.echo(f"experiment {experiment_id} ({status})")
    click.echo(render_table(result))


@click.command("export-decisions")
@with_appcontext
@click.option("--since", type=Moment(), help="first serving time [default: 24 h ago]")
@click.option("--until", type=Moment(), help="last serving time [default: now]")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "obd"]), default="jsonl",
    show_default=True,
    help="jsonl: one line per decision, from the Redis streams; obd: the Open Bandit "
    "Dataset's CSV layout in the directory --output, from the decision files",
)  # fmt: skip
@click.option("--output", "-o", default="-", show_default=True,
              help="a file (jsonl; - is stdout) or a directory (obd)")  # fmt: skip
@click.option("--all", "include_all", is_flag=True,
              help="obd: also the rows without a known propensity (left empty)")  # fmt: skip
@click.option("--log-url", help="obd: the decision files [default: BANDIT_DECISION_LOG_URL]")
def export_decisions(
    since: float | None,
    until: float | None,
    fmt: str,
    output: str,
    include_all: bool,
    log_url: str | None,
) -> None:
    """Write served slates with their impressions and clicks.

    jsonl: one line per decision (see app/decisions.py for the fields); ``final`` marks
    decisions whose attribution window and grace are over. obd: see core/decision_files/obd.py.
    """
    rt, now = runtime(), time.time()
    since = now - 86_400 if since is None else since
    until = now if until is None else until
    if fmt == "obd":
        url = rt.settings.decision_log_url if log_url is None else log_url
        _export_obd(url, since, until, rt.settings.event_keep_seconds, output, include_all)
        return
    with click.open_file(output, "w") as out:
        _export_jsonl(since, until, now, out)


def _export_jsonl(since: float, until: float, now: float, output: IO[str]) -> None:
    rt = runtime()
    summary = decisions.export(
        rt.storage.decisions, since, until, rt.settings.event_keep_seconds, now, output
    )
    click.echo(f"exported {summary.decisions} decisions ({summary.final} final)", err=True)
    if summary.outcomes_trimmed:
        click.echo(
            "warning: the outcome stream was trimmed after --since; the oldest decisions "
            "may lack outcomes (raise BANDIT_DECISION_LOG_MAXLEN or export more often)",
            err=True,
        )


def _export_obd(
    url: str, since: float, until: float, window: int, output: str, include_all: bool
) -> None:
    """The decision files of [since, until] under ``output`` in the Open Bandit Dataset's
    layout. Only the files are read: slates not drained yet are left out (their outcomes
    are not final either)."""
    if output == "-":
        raise click.BadParameter(
            "--format obd writes a directory, not stdout", param_hint="'--output'"
        )
    if not url:
        raise click.BadParameter(
            "--format obd reads the decision files: set BANDIT_DECISION_LOG_URL or --log-url",
            param_hint="'--log-url'",
        )
    # Here, not at the top: pyarrow and pandas weigh about 100 MB, and every web process
    # imports this module (the app registers its commands), while only this command reads
    # the files.
    from core.decision_files import obd
    from core.decision_files.read import read_joined
    from core.decision_files.store import Store, StoreError

    try:
        store = Store(url)
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="'--log-url'") from None
    table = read_joined(store, int(since * 1000), int(until * 1000), window * 1000)
    written = obd.write(table, Path(output), include_all)
    click.echo(
        f"exported {sum(written.values())} of {table.num_rows} rows ("
        + (", ".join(f"{policy}: {count}" for policy, count in written.items()) or "none")
        + ")"
        + ("" if include_all else "; rows without a propensity left out (--all)"),
        err=True,
    )
