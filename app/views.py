"""HTTP views of API v1: validate input, call one service function, shape the JSON."""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import OperationalError

from app import metrics, service
from app.errors import ApiError, Forbidden, InvalidInput, Unauthorized, Unavailable
from app.runtime import runtime
from app.schemas import ID_MAX, ID_PATTERN, EventBatch, PostIn, RecommendationQuery

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


def _json_body() -> Any:
    if not request.is_json:
        raise InvalidInput("the body must be JSON (Content-Type: application/json)", "body")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", "body")
    return body


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


@bp.errorhandler(redis.RedisError)
def _redis_down(exc: redis.RedisError) -> Response:
    log.warning("redis error at %s: %s", request.path, exc)
    metrics.REDIS_ERRORS.labels(operation=request.endpoint or "unknown").inc()
    raise Unavailable("storage is unreachable; retry later") from exc


@bp.get("/v1/recommendations")
def recommendations() -> Response:
    query = RecommendationQuery.model_validate(request.args.to_dict())
    return jsonify(service.recommend(runtime(), query))


def _events(event_type: str) -> tuple[Response, int]:
    rt = runtime()
    if rt.settings.app_token:
        _require_token(rt.settings.app_token)
    batch = EventBatch.model_validate(_json_body())
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
    body = PostIn.model_validate(_json_body())
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
    return jsonify({"forums": service.list_forums(runtime())})


@bp.get("/v1/forums/<forum_id>")
def forum(forum_id: str) -> Response:
    return jsonify(service.get_forum(runtime(), _path_id(forum_id, "forum_id")))


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    rt = runtime()
    checks = {"redis": _check(rt.storage.ping), "broker": _check(lambda: _broker_ok(rt))}
    ok = all(checks.values())
    return jsonify({"status": "ok" if ok else "unavailable", "checks": checks}), 200 if ok else 503


def _check(probe: Any) -> bool:
    try:
        return bool(probe())
    except (redis.RedisError, OperationalError, OSError) as exc:
        log.warning("readiness check failed: %s", exc)
        return False


def _broker_ok(rt: Any) -> bool:
    with rt.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
    return True


__all__ = ["ApiError", "bp"]
