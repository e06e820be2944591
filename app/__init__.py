"""postbandit's HTTP service: ``create_app`` is the one place where it is assembled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from app import (
    cli,
    encoding,
    errors,
    experiment_views,
    logs,
    monitoring,
    runtime,
    service,
    views,
)
from app.schemas import MAX_BODY_BYTES
from core.settings import Settings


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app from ``config`` (tests) or the environment (production).

    Raises:
        core.settings.ConfigError: a setting is invalid or missing in production.
    """
    settings = Settings.from_env() if config is None else Settings.from_mapping(config)
    app = Flask(__name__)
    app.json = encoding.OrjsonProvider(app)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    logs.init_app(app, settings.log_level)
    errors.init_app(app)
    runtime.init_app(app, settings)
    monitoring.init_app(app, settings.policy, lambda: service.dependencies(runtime.runtime()))
    app.register_blueprint(views.bp)
    app.register_blueprint(experiment_views.bp)
    cli.init_app(app)
    return app
