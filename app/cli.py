"""Flask CLI commands: ``flask --app app <command>``."""

from __future__ import annotations

import click
from flask import Flask

from app import demo
from app.runtime import runtime


def init_app(app: Flask) -> None:
    @app.cli.command("load-demo")
    @click.option("--posts-per-forum", default=8, show_default=True, type=click.IntRange(1, 1000))
    def load_demo(posts_per_forum: int) -> None:
        """Register a small demo catalogue (a few forums and posts)."""
        count = demo.load(runtime(), posts_per_forum)
        click.echo(f"registered {count} demo posts")
