"""Structured logging: one JSON object per line on stdout, ready for Loki or ELK (format:
:mod:`jsonlog`)."""

from __future__ import annotations

import logging
import sys
import time

from flask import Flask

from jsonlog import JsonFormatter


def configure(level: str) -> None:
    """Send every log record of the process to stdout as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def init_app(app: Flask, level: str) -> None:
    configure(level)
    app.logger.handlers.clear()
    app.logger.propagate = True
    logging.Formatter.converter = time.gmtime
