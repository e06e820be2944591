"""HTTP views of API v1: validate input, call one service function, shape the JSON."""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import OperationalError
from werkzeug.exceptions import RequestEntityTooLarge

from app import openapi, service
from app.errors import ApiError, Forbidden, InvalidInput, Unauthorized, Unavailable
from app.runtime import runtime
from app.schemas import (
    ID_MAX,
    ID_PATTERN,
    EventBatch,
    ForumsQuery,
    PostIn,
    RecommendationBody,
    RecommendationQuery,
    Strict,
)
from core import metrics
from core.storage.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
# What a failed readiness probe raises: Redis, the broker, or the network.
_PROBE_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OperationalError, OSError)
bp = Blueprint("api", __name__)
Body = TypeVar("Body", bound=Strict)


def _json_body(model: type[Body]) -> Body:
    """The request body parsed and validated by ``model`` in one step (pydantic's parser has a
    nesting limit, so a deeply nested body is a 400, not a recursion error)."""
    if not request.is_json:
        raise InvalidInput("the body must be JSON (Content-Type: application/json)", "body")
    data, limit = request.get_data(), request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        # A streamed (chunked) body is cut at the limit without an error: it was too large.
        raise RequestEntityTooLarge()
    return model.model_validate_json(data)


def _path_id(value: str, name: str) -> str:
    if len(value) > ID_MAX or not re.fullmatch(ID_PATTERN, value):
        raise InvalidInput(f"{name}: 1-{ID_MAX} characters from A-Z a-z 0-9 _ . : -", name)
    return value


def _require_token(expected: str) -> None:
    """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("the bearer token is not valid for this operation")


def _redis_down(exc: Exception) -> Response:
    """503 with Retry-After. An error handler must return its answer: one it raises is not
    handled again, and would leave as a 500."""
    metrics.redis_failed(log, request.endpoint or "unknown", exc)
    return Unavailable("storage is unreachable; retry later").response()


for _error in REDIS_ERRORS:
    bp.register_error_handler(_error, _redis_down)


@bp.before_app_request
def _known_query() -> None:
    """Every endpoint refuses a query parameter that its operation in /openapi.json does not
    take, before anything else, rather than ignore it; and one given twice, not half-read.
    (An unknown route or method is left to its 404 or 405, and OPTIONS, which reads no query,
    to Flask.)"""
    if request.url_rule is None or request.method == "OPTIONS":
        return
    known = openapi.query_names(request.method, request.url_rule.rule)
    for name, values in request.args.lists():
        if name not in known:
            raise InvalidInput(f"{name or '(empty name)'}: unknown query parameter", name)
        if len(values) > 1:
            raise InvalidInput(f"{name}: given more than once (lists are comma-separated)", name)


@bp.get("/v1/recommendations")
def recommendations() -> Response:
    query = RecommendationQuery.model_validate(request.args.to_dict())
    return jsonify(service.recommend(runtime(), query))


@bp.post("/v1/recommendations")
def recommendations_for_body() -> Response:
    """The same slate as ``GET``, for filters too long for a request line."""
    return jsonify(service.recommend(runtime(), _json_body(RecommendationBody)))


def _events(event_type: str) -> tuple[Response, int]:
    rt = runtime()
    if rt.settings.app_token:
        _require_token(rt.settings.app_token)
    batch = _json_body(EventBatch)
    return jsonify({"accepted": service.submit_events(rt, event_type, batch)}), 202


@bp.post("/v1/impressions")
def impressions() -> tuple[Response, int]:
    return _events("impression")


@bp.post("/v1/clicks")
def clicks() -> tuple[Response, int]:
    return _events("click")


@bp.put("/v1/posts/<post_id>")
def put_post(post_id: str) -> tuple[Response, int]:
    rt = runtime()
    _require_token(rt.settings.admin_token)
    body = _json_body(PostIn)
    view, created = service.put_post(rt, _path_id(post_id, "post_id"), body)
    return jsonify(view), 201 if created else 200


@bp.delete("/v1/posts/<post_id>")
def delete_post(post_id: str) -> tuple[str, int]:
    rt = runtime()
    _require_token(rt.settings.admin_token)
    service.delete_post(rt, _path_id(post_id, "post_id"))
    return "", 204


@bp.get("/v1/posts/<post_id>")
def get_post(post_id: str) -> Response:
    return jsonify(service.get_post(runtime(), _path_id(post_id, "post_id")))


@bp.get("/v1/forums")
def forums() -> Response:
    query = ForumsQuery.model_validate(request.args.to_dict())
    return jsonify(service.list_forums(runtime(), query.limit, query.cursor))


@bp.get("/v1/forums/<forum_id>")
def forum(forum_id: str) -> Response:
    return jsonify(service.get_forum(runtime(), _path_id(forum_id, "forum_id")))


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document())


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    rt = runtime()
    checks = {"redis": _check(rt.storage.ping), "broker": _check(lambda: _broker_ok(rt))}
    ok = all(checks.values())
    return jsonify({"status": "ok" if ok else "unavailable", "checks": checks}), 200 if ok else 503


def _check(probe: Any) -> bool:
    try:
        return bool(probe())
    except _PROBE_ERRORS as exc:
        log.warning("readiness check failed: %s", exc)
        return False


def _broker_ok(rt: Any) -> bool:
    """PING the broker once, within the web tier's publish timeout (no retries)."""
    with rt.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0)
        return bool(conn.default_channel.client.ping())


__all__ = ["ApiError", "bp"]
