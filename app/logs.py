"""The Flask app's logging: its records go to the process's JSON lines (:mod:`core.logs`)."""

from __future__ import annotations

from flask import Flask

from core.logs import configure


def init_app(app: Flask, level: str) -> None:
    configure(level)
    app.logger.handlers.clear()
    app.logger.propagate = True
