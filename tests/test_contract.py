"""The OpenAPI document: it lists exactly the app's routes, and fuzzing every operation from it
(schemathesis, valid and invalid input) gives no 5xx, no hang, and only documented answers,
every error in the one error shape. Runs against a real Redis through the WSGI app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from hypothesis import strategies as st
from schemathesis import GenerationMode

from app import create_app
from app.openapi import OPERATIONS, document
from app.schemas import ErrorBody
from tests.conftest import register

APP_TOKEN = "fuzz-app-token"
ADMIN_TOKEN = "test-admin-token"
EXAMPLES_PER_OPERATION = 40


def routes(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every URL rule, HEAD and OPTIONS aside."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        found |= {(m, path) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}}
    return found


def test_document_lists_exactly_the_routes_of_the_app(app: Flask) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in document()["paths"].items()
        for method in operations
    }
    assert documented == routes(app)
    assert len(OPERATIONS) == len(documented)


def test_document_is_served_and_describes_the_limits(client: Any) -> None:
    served = client.get("/openapi.json").json
    assert served == document()
    assert served["openapi"].startswith("3.")
    query = {p["name"]: p for p in served["paths"]["/v1/recommendations"]["get"]["parameters"]}
    assert query["n"]["schema"]["maximum"] == 50
    assert query["exclude"]["schema"]["maxItems"] == 500
    batch = served["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    put = served["paths"]["/v1/posts/{post_id}"]["put"]
    assert put["security"] == [{"admin": []}]
    assert "413" in put["responses"]


@pytest.fixture
def fuzz_app(config: dict[str, Any]) -> Iterator[Flask]:
    """The app with an app token set, so event posts need one too, and a few real posts."""
    flask_app = create_app({**config, "BANDIT_APP_TOKEN": APP_TOKEN})
    client = flask_app.test_client()
    for i in range(3):
        register(client, f"maths-{i}", "maths")
    yield flask_app
    flask_app.extensions["postbandit"].snapshots.stop()


@pytest.mark.parametrize(("method", "path"), [(op.method, op.path) for op in OPERATIONS], ids=str)
def test_fuzz_every_operation(fuzz_app: Flask, method: str, path: str) -> None:
    operation = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)[path][method]
    secured = any(op.security for op in OPERATIONS if (op.method, op.path) == (method, path))
    strategy = st.one_of(operation.as_strategy(mode) for mode in GenerationMode)

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )  # fmt: skip
    @hypothesis.given(case=strategy)
    def fuzz(case: Any) -> None:
        token = ADMIN_TOKEN if method in {"PUT", "DELETE"} else APP_TOKEN
        started = time.monotonic()
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
        assert time.monotonic() - started < 5, "a request took more than 5 s"
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            ErrorBody.model_validate_json(response.content)
        if secured:
            check_auth(case)

    fuzz()


def check_auth(case: Any) -> None:
    """A secured operation refuses a missing (401) or wrong (403) token before anything else."""
    generated = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    for header, status in (("", 401), ("Bearer wrong-token", 403)):
        case.headers = {**generated, "Authorization": header}
        response = case.call()
        assert response.status_code == status, response.text
        ErrorBody.model_validate_json(response.content)
