"""The OpenAPI 3.1 description of the API, served at ``/openapi.json``.

Schemas come from the pydantic models in :mod:`app.schemas` (the same ones that validate
requests); this module adds only the route table below. tests/test_contract.py checks that the
table and the Flask URL map list the same operations, and fuzzes every operation from this
document, validating each response against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from app.experiment_schemas import (
    ExperimentIn,
    ExperimentList,
    ExperimentResults,
    ExperimentView,
    StopIn,
)
from app.schemas import (
    ID_CHARS,
    ID_MAX,
    MAX_BODY_BYTES,
    MAX_REQUEST_LINE,
    Accepted,
    ErrorBody,
    EventBatch,
    ForumList,
    ForumsQuery,
    ForumView,
    Id,
    PostIn,
    PostView,
    Readiness,
    RecommendationBody,
    RecommendationQuery,
    Recommendations,
    Status,
)

REF = "#/components/schemas/{model}"
ERROR_STATUSES = {
    400: "invalid input, or a query parameter the operation does not take: the error names "
    "the field and the limit",
    401: "no bearer token",
    403: "wrong bearer token",
    404: "unknown resource",
    409: "conflicting catalogue or experiment change",
    413: f"request body larger than {MAX_BODY_BYTES} bytes",
    414: f"request line longer than {MAX_REQUEST_LINE} bytes (answered by gunicorn, for any "
    "path): send long lists in the body of `POST /v1/recommendations`",
    503: "Redis or the broker is unreachable; retry after `Retry-After` seconds",
}


@dataclass(frozen=True)
class Operation:
    """One route and method: its input models, answers and the token it needs."""

    method: str
    path: str
    summary: str
    responses: dict[int, type[BaseModel] | str]
    errors: tuple[int, ...] = ()
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    security: str | None = None
    tags: tuple[str, ...] = field(default=("api",))
    body_required: bool = True


EVENT_ERRORS = (400, 401, 403, 413, 503)
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/recommendations", "A slate of posts for a member",
              {200: Recommendations}, (400, 414, 503), query=RecommendationQuery),
    Operation("POST", "/v1/recommendations",
              "A slate of posts for a member, with filters too long for a query string",
              {200: Recommendations}, (400, 413, 503), body=RecommendationBody),
    Operation("POST", "/v1/impressions", "Report shown posts", {202: Accepted}, EVENT_ERRORS,
              body=EventBatch, security="app"),
    Operation("POST", "/v1/clicks", "Report clicked posts", {202: Accepted}, EVENT_ERRORS,
              body=EventBatch, security="app"),
    Operation("PUT", "/v1/posts/{post_id}", "Register or update a candidate post",
              {200: PostView, 201: PostView}, (400, 401, 403, 409, 413, 503),
              body=PostIn, security="admin"),
    Operation("DELETE", "/v1/posts/{post_id}", "Withdraw a post for good",
              {204: "withdrawn"}, (400, 401, 403, 404, 503), security="admin"),
    Operation("GET", "/v1/posts/{post_id}", "A post's counts and posterior",
              {200: PostView}, (400, 404, 503)),
    Operation("GET", "/v1/forums", "A page of the forums' totals and policy counts",
              {200: ForumList}, (400, 503), query=ForumsQuery),
    Operation("GET", "/v1/forums/{forum_id}", "One forum's totals and policy counts",
              {200: ForumView}, (400, 404, 503)),
    Operation("PUT", "/v1/experiments/{experiment_id}",
              "Start an experiment (201), or confirm it runs as defined (200)",
              {200: ExperimentView, 201: ExperimentView}, (400, 401, 403, 409, 413, 503),
              body=ExperimentIn, security="admin", tags=("experiments",)),
    Operation("GET", "/v1/experiments",
              "The running experiment, the policy outside one, and the last 100 experiments",
              {200: ExperimentList}, (503,), tags=("experiments",)),
    Operation("GET", "/v1/experiments/{experiment_id}", "One experiment",
              {200: ExperimentView}, (400, 404, 503), tags=("experiments",)),
    Operation("GET", "/v1/experiments/{experiment_id}/results",
              "An experiment's counts per variant, each variant against the control "
              "(delta-method interval, always-valid mSPRT p-value, confidence sequence) and "
              "the sample-ratio check", {200: ExperimentResults}, (400, 404, 503),
              tags=("experiments",)),
    Operation("POST", "/v1/experiments/{experiment_id}/stop",
              "Stop the running experiment, promoting one of its variants or not",
              {200: ExperimentView}, (400, 401, 403, 404, 409, 413, 503), body=StopIn,
              security="admin", tags=("experiments",), body_required=False),
    Operation("GET", "/healthz", "The process is up", {200: Status}, tags=("ops",)),
    Operation("GET", "/readyz", "Redis and the broker are reachable",
              {200: Readiness, 503: Readiness}, tags=("ops",)),
    Operation("GET", "/metrics", "Prometheus exposition", {200: "text"}, tags=("ops",)),
    Operation("GET", "/openapi.json", "This document", {200: "json"}, tags=("ops",)),
)  # fmt: skip

SECURITY_SCHEMES = {
    "admin": {"type": "http", "scheme": "bearer", "description": "BANDIT_ADMIN_TOKEN"},
    "app": {"type": "http", "scheme": "bearer",
            "description": "BANDIT_APP_TOKEN; required only when it is set"},
}  # fmt: skip


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once per process)."""
    refs, schemas = _components()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "postbandit", "version": "1",
                 "description": "Thompson-sampling recommendations for a forum homepage."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }  # fmt: skip


@cache  # every request asks; the app's rules and their methods are few
def query_names(method: str, rule: str) -> frozenset[str]:
    """The query parameters of the operation at a Flask URL rule (``/v1/posts/<post_id>``):
    those of its query model; none when it has no model or is not described."""
    path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)
    return _query_names().get(("GET" if method == "HEAD" else method, path), frozenset())


@cache
def _query_names() -> dict[tuple[str, str], frozenset[str]]:
    return {(op.method, op.path): frozenset(op.query.model_fields) for op in OPERATIONS if op.query}


def _components() -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """JSON schemas of every model named in OPERATIONS, as ``$ref``s into components."""
    bodies = {op.body for op in OPERATIONS if op.body is not None}
    models: set[type[BaseModel]] = {ErrorBody, *bodies}
    for op in OPERATIONS:
        models.update(m for m in op.responses.values() if isinstance(m, type))
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if m in bodies else "serialization")
        for m in sorted(models, key=lambda m: m.__name__)
    ]
    refs, defs = models_json_schema(keyed, ref_template=REF)
    return {model: ref for (model, _), ref in refs.items()}, defs.get("$defs", {})


def _operation(op: Operation, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}{op.path.replace('/', '_').replace('.', '_')}",
        "tags": list(op.tags),
        "parameters": _path_parameters(op.path) + _query_parameters(op.query),
        "responses": {str(s): _response(a, refs) for s, a in op.responses.items()},
    }
    for status in sorted({400, *op.errors}):  # every operation refuses unknown query names
        spec["responses"][str(status)] = {
            "description": ERROR_STATUSES[status],
            "content": {"application/json": {"schema": refs[ErrorBody]}},
        }
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[op.body]}},
        }
    if op.security is not None:
        spec["security"] = [{op.security: []}]
    return spec


def _response(answer: type[BaseModel] | str, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if answer == "text":
        return {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    if answer == "json":
        return {"description": "JSON", "content": {"application/json": {"schema": {}}}}
    if isinstance(answer, str):
        return {"description": answer}
    return {
        "description": answer.__doc__ or answer.__name__,
        "content": {"application/json": {"schema": refs[answer]}},
    }


def _path_parameters(path: str) -> list[dict[str, Any]]:
    id_schema = TypeAdapter(Id).json_schema()
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": name, "in": "path", "required": True, "schema": id_schema} for name in names]


def _query_parameters(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    """Query parameters from a model, each described as the text the service reads."""
    if model is None:
        return []
    schema = model.model_json_schema()
    params = []
    for name, raw in schema["properties"].items():
        prop = _without_null(raw)
        param = {"name": name, "in": "query", "required": name in schema.get("required", ())}
        if prop.get("type") == "array":
            param["description"] = f"comma-separated ids, at most {prop['maxItems']}"
            prop = _id_list(prop)
        params.append({**param, "schema": prop})
    return params


def _id_list(prop: dict[str, Any]) -> dict[str, Any]:
    """A list of ids as the one comma-separated string that carries it (``forums=a,b``).

    Described as an array (style form, explode false), a scalar such as ``0`` or ``0.0`` would
    be invalid, yet it is sent as the very text of a valid one-id list: a fuzzer's "invalid"
    case would then be a valid request. The pattern admits exactly the lists the model does.

    Raises:
        ValueError: the list is not of ids, or may be empty (no query text spells that).
    """
    if prop["items"] != TypeAdapter(Id).json_schema() or prop.get("minItems") != 1:
        raise ValueError(f"no query-string form for {prop}")
    item = f"{ID_CHARS}{{1,{ID_MAX}}}"
    return {"type": "string", "pattern": f"^{item}(?:,{item}){{0,{prop['maxItems'] - 1}}}$"}


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` means "absent" in a query string: describe X only."""
    branches = [b for b in prop.get("anyOf", ()) if b.get("type") != "null"]
    if len(branches) != 1:
        return {k: v for k, v in prop.items() if k != "title"}
    extra = {k: v for k, v in prop.items() if k not in {"anyOf", "title", "default"}}
    return {**branches[0], **extra}
