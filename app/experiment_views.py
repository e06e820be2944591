"""HTTP views of the experiment API (``/v1/experiments``): validate, call one function of
:mod:`app.experiments`, shape the JSON. Writes need the admin token; input helpers and the
answer to a Redis failure are the API's (app.views)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app import experiment_results, experiments
from app.experiment_schemas import ExperimentIn, StopIn
from app.runtime import runtime
from app.views import _json_body, _path_id, _redis_down, _require_token
from core.storage.errors import REDIS_ERRORS

bp = Blueprint("experiments", __name__)
for _error in REDIS_ERRORS:
    bp.register_error_handler(_error, _redis_down)


@bp.put("/v1/experiments/<experiment_id>")
def put_experiment(experiment_id: str) -> tuple[Response, int]:
    """201 when this call started the experiment, 200 when it already ran as defined."""
    rt = runtime()
    _require_token(rt.settings.admin_token)
    experiment_id = _path_id(experiment_id, "experiment_id")
    view, created = experiments.put_experiment(rt, experiment_id, _json_body(ExperimentIn))
    return jsonify(view), 201 if created else 200


@bp.get("/v1/experiments")
def list_experiments() -> Response:
    return jsonify(experiments.list_experiments(runtime()))


@bp.get("/v1/experiments/<experiment_id>")
def get_experiment(experiment_id: str) -> Response:
    experiment_id = _path_id(experiment_id, "experiment_id")
    return jsonify(experiments.get_experiment(runtime(), experiment_id))


@bp.get("/v1/experiments/<experiment_id>/results")
def get_results(experiment_id: str) -> Response:
    experiment_id = _path_id(experiment_id, "experiment_id")
    return jsonify(experiment_results.experiment_results(runtime(), experiment_id))


@bp.post("/v1/experiments/<experiment_id>/stop")
def stop_experiment(experiment_id: str) -> Response:
    """The body is optional: none stops without promoting."""
    rt = runtime()
    _require_token(rt.settings.admin_token)
    experiment_id = _path_id(experiment_id, "experiment_id")
    body = _json_body(StopIn) if request.get_data() else StopIn()
    return jsonify(experiments.stop_experiment(rt, experiment_id, body))
