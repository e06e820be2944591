"""Domain exceptions and the one JSON error shape of the API.

Every failure leaves the service as ``{"error": {"code", "message", "field"}}`` with a 4xx/5xx
status; ``field`` names the offending input (``events[3].post_id``) or is ``null``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pydantic
from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the caller as JSON."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> Response:
        """This error as the one JSON error shape, for handlers that must return, not raise."""
        return error_response(self.status, self.code, self.message, self.field, self.headers)


class InvalidInput(ApiError):
    status = 400
    code = "invalid_input"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class TooLarge(ApiError):
    status = 413
    code = "too_large"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Unavailable(ApiError):
    """A dependency (Redis, the broker) is down; the caller should retry later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build the one error shape; every error path of the API goes through here."""
    response = jsonify({"error": {"code": code, "message": message, "field": field}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def field_path(loc: Sequence[Any]) -> str:
    """Render a pydantic location ``('events', 3, 'post_id')`` as ``events[3].post_id``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


_BODY_ERRORS = {  # errors about the body as a whole, when it is parsed by the model
    "json_invalid": "{msg}",
    "model_type": "the body must be a JSON object",
}


def from_validation_error(exc: pydantic.ValidationError) -> InvalidInput:
    """The first validation failure, with its field path and the limit it broke."""
    first = exc.errors(include_url=False)[0]
    field = field_path(first["loc"]) or None
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] in _BODY_ERRORS:
        field, message = "body", _BODY_ERRORS[first["type"]].format(msg=message)
    return InvalidInput(f"{field}: {message}" if field else message, field=field)


def init_app(app: Flask) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return exc.response()

    @app.errorhandler(pydantic.ValidationError)
    def _validation_error(exc: pydantic.ValidationError) -> Response:
        return _api_error(from_validation_error(exc))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return _api_error(TooLarge(f"body: larger than the limit of {limit} bytes", "body"))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = dict(exc.get_headers())
        headers.pop("Content-Type", None)
        return error_response(exc.code or 500, code, exc.description or code, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
