"""The OpenAPI document: it lists exactly the app's routes, and fuzzing every operation from it
(schemathesis, valid and invalid input) gives no 5xx, no hang, and only documented answers,
every error in the one error shape. Runs against a real Redis through the WSGI app."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import hypothesis
import jsonschema_rs
import pydantic
import pytest
import schemathesis
from flask import Flask
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from app import create_app
from app.experiment_schemas import ExperimentIn
from app.openapi import OPERATIONS, document
from app.schemas import (
    ID_MAX,
    ID_PATTERN,
    MAX_CLOCK_SKEW_SECONDS,
    MAX_EXCLUDE,
    MAX_FORUMS,
    ErrorBody,
)
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
    assert query["exclude"]["schema"]["pattern"].endswith("{0,499}$")
    batch = served["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    put = served["paths"]["/v1/posts/{post_id}"]["put"]
    assert put["security"] == [{"admin": []}]
    assert "413" in put["responses"]


def query_schema(name: str) -> dict[str, Any]:
    parameters = document()["paths"]["/v1/recommendations"]["get"]["parameters"]
    [schema] = [p["schema"] for p in parameters if p["name"] == name]
    return schema


def test_every_query_parameter_is_described_as_the_text_the_service_reads() -> None:
    """Lists are one comma-separated string, not arrays: an array schema calls a scalar such as
    0.0 invalid, though ``exclude=0.0`` is the text of a valid one-id list."""
    for op in OPERATIONS:
        for parameter in document()["paths"][op.path][op.method.lower()]["parameters"]:
            assert parameter["schema"]["type"] in {"string", "integer"}, parameter


ID_LISTS = ["0.0", "-358", "true", "null", "a,b", "a.b:c-d_e", "a,,b", ",a", "a,", ",", "", "a b",
            "a\n", "\u00e9", "a;b", "a" * 64, "a" * 65]  # fmt: skip


@pytest.mark.parametrize(("name", "most"), [("forums", MAX_FORUMS), ("exclude", MAX_EXCLUDE)])
def test_an_id_list_is_valid_in_the_document_exactly_when_the_service_takes_it(
    client: Any, name: str, most: int
) -> None:
    documented = jsonschema_rs.validator_for(query_schema(name))

    def agree(text: str) -> None:
        response = client.get("/v1/recommendations", query_string={"user_id": "u", name: text})
        assert response.status_code in (200, 400), response.text
        assert (response.status_code == 200) == documented.is_valid(text), (text, response.json)

    for text in [*ID_LISTS, ",".join(["p"] * most), ",".join(["p"] * (most + 1))]:
        agree(text)

    @hypothesis.settings(max_examples=150, database=None, deadline=None)
    @hypothesis.given(st.text(alphabet="a0,.:-_ %+\n\u00e9", max_size=12))
    def agree_on_any(text: str) -> None:
        agree(text)

    agree_on_any()


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
    [security] = [op.security for op in OPERATIONS if (op.method, op.path) == (method, path)]
    beyond = BEYOND_SCHEMA.get((method, path))
    strategy = st.one_of(operation.as_strategy(mode) for mode in GenerationMode)

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )  # fmt: skip
    @hypothesis.given(case=strategy)
    def fuzz(case: Any) -> None:
        token = ADMIN_TOKEN if security == "admin" else APP_TOKEN
        started = time.monotonic()
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"},
            excluded_checks=[positive_data_acceptance] if beyond else [],
        )
        assert time.monotonic() - started < 5, "a request took more than 5 s"
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            ErrorBody.model_validate_json(response.content)
        if beyond:
            beyond(case, response)
        if security:
            check_auth(case)

    fuzz()


# The rules of an experiment definition that JSON Schema cannot state: distinct names, a
# control among them, the parameters of each variant's policy, a weight that wins members.
ACROSS_FIELDS = re.compile(r"control|variants\[\d+\]\.(?:name|weight|params\..+)")


def check_only_rules_across_fields_refuse(case: Any, response: Any) -> None:
    """A definition valid by its schema is refused (400) only for a rule across its fields."""
    body = case.body
    try:
        ExperimentIn.model_validate(body, strict=False)
    except pydantic.ValidationError:
        return
    if response.status_code == 400:
        field = response.json()["error"]["field"]
        assert field == "experiment_id" or ACROSS_FIELDS.fullmatch(field), response.text


def check_only_the_clock_refuses(case: Any, response: Any) -> None:
    """A post valid by its documented schema is refused (400) only for a ``created_at`` further
    ahead of the server's clock than the skew it allows (a rule on the time of the request)."""
    body, post_id = case.body, (case.path_parameters or {}).get("post_id")
    if response.status_code != 400 or not isinstance(body, dict) or not POST_BODY.is_valid(body):
        return
    if (
        not isinstance(post_id, str)
        or len(post_id) > ID_MAX
        or not re.fullmatch(ID_PATTERN, post_id)
    ):
        return  # a path the schema refuses
    assert response.json()["error"]["field"] == "created_at", response.text
    ahead = datetime.fromisoformat(body["created_at"]).timestamp() - time.time()
    assert ahead > MAX_CLOCK_SKEW_SECONDS, response.text


POST_BODY = jsonschema_rs.validator_for(
    document()["components"]["schemas"]["PostIn"], validate_formats=True
)


# The operations whose schema-valid requests a rule beyond JSON Schema may refuse, and the
# check that only that rule did.
BEYOND_SCHEMA = {
    ("PUT", "/v1/experiments/{experiment_id}"): check_only_rules_across_fields_refuse,
    ("PUT", "/v1/posts/{post_id}"): check_only_the_clock_refuses,
}


def check_auth(case: Any) -> None:
    """A secured operation refuses a missing (401) or wrong (403) token before anything else."""
    generated = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    for header, status in (("", 401), ("Bearer wrong-token", 403)):
        case.headers = {**generated, "Authorization": header}
        response = case.call()
        assert response.status_code == status, response.text
        ErrorBody.model_validate_json(response.content)
