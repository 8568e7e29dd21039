"""The cloud's OpenAPI document: every operation summarised, described, tagged and with its errors
documented; every request body with an example; every example a valid instance of its model."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from cloud_server.app import create_app
from protocol import messages
from protocol.crypto import KekRing
from services.store import MemoryStore
from tests.cloud.harness import KEK, cloud_settings
from tests.openapi_checks import examples, operations, request_body_has_example, validate

# Operations that answer anyone and refuse nothing but a broken store.
NO_CLIENT_ERRORS = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /dashboard"}
# What admins and peers send, and what they get back: each must carry an example of its own.
EXAMPLE_MODELS = {
    "FederationSpec",
    "EdgeEnrolment",
    "ClientEnrolment",
    "EdgeAggregate",
    "AdapterEvaluation",
    "FederationInfo",
    "FederationCreated",
    "RoundPlan",
    "RoundStatus",
    "ClientInfo",
    "AdapterVersion",
    "PrivacyReport",
    "ErrorBody",
    "Enrolled",
    "EdgeInfo",
    "EdgeProgress",
}
MODELS = {
    name: model
    for name, model in vars(messages).items()
    if inspect.isclass(model) and issubclass(model, BaseModel)
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """`/openapi.json` as the app serves it (no lifespan needed: the document is built from the routes)."""
    app = create_app(cloud_settings(), store=MemoryStore(), keks=KekRing(KEK))
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_operation_has_a_summary_a_description_and_a_tag(document: dict[str, Any]) -> None:
    tags = {t["name"] for t in document["tags"]}
    for operation in operations(document):
        assert operation.spec.get("summary"), f"{operation} has no summary"
        assert operation.spec.get("description"), f"{operation} has no description"
        assert operation.spec.get("tags") and set(operation.spec["tags"]) <= tags, f"{operation}: {tags}"


def test_every_operation_documents_its_client_errors_as_error_bodies(document: dict[str, Any]) -> None:
    for operation in operations(document):
        responses = operation.spec["responses"]
        errors = {status: r for status, r in responses.items() if status[0] in "45"}
        if str(operation) not in NO_CLIENT_ERRORS:
            assert any(status.startswith("4") for status in errors), f"{operation} documents no 4xx"
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{operation} {status}: {schema}"
    # FastAPI's own 422 body is never sent: every refusal is an ErrorBody.
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    bodies = [op for op in operations(document) if "requestBody" in op.spec]
    assert {str(op) for op in bodies} >= {
        "POST /federations",
        "POST /federations/{fid}/edges",
        "POST /federations/{fid}/clients",
        "POST /federations/{fid}/rounds/{n}/aggregates",
        "PUT /federations/{fid}/adapters/{version}/evaluation",
    }
    for operation in bodies:
        assert request_body_has_example(document, operation), f"{operation}'s request body has no example"


def test_the_main_models_carry_examples(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {name for name in EXAMPLE_MODELS if not schemas[name].get("examples")} == set()


def test_every_example_in_the_document_validates_against_its_model(document: dict[str, Any]) -> None:
    found = examples(document)
    assert {e.schema for e in found} >= EXAMPLE_MODELS
    for example in found:
        validate(example, MODELS)


def test_the_round_listing_documents_its_pagination_headers(document: dict[str, Any]) -> None:
    listing = document["paths"]["/federations/{fid}/rounds"]["get"]
    assert set(listing["responses"]["200"]["headers"]) == {"X-Total-Count", "Link"}
    assert {p["name"] for p in listing["parameters"] if p["in"] == "query"} == {"offset", "limit"}


def test_examples_hold_no_real_looking_secret(document: dict[str, Any]) -> None:
    # Tokens in examples say they are examples; byte fields are short placeholders, never key material.
    for example in examples(document):
        text = str(example.value)
        for key in ("api_token", "enrolment_token"):
            value = example.value.get(key) if isinstance(example.value, dict) else None
            assert value is None or "example" in value, f"{example.where}: {key} {value!r}"
        assert "BEGIN" not in text and "PRIVATE" not in text.upper(), example.where
