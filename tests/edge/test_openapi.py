"""The edge's OpenAPI document: every operation summarised, described, tagged and with its errors
documented; the upload's body is `ClientUpdate` in the components, with an example; every example valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge_aggregator.app import create_app
from edge_aggregator.routes import EdgeHealth
from protocol.messages import ClientUpdate, EdgeProgress, ErrorBody, LocalSpend, UploadAccepted
from services.settings import EdgeSettings
from tests.openapi_checks import examples, operations, request_body_has_example, validate

NO_CLIENT_ERRORS = {"GET /healthz", "GET /readyz", "GET /metrics"}
MODELS = {
    model.__name__: model
    for model in (ClientUpdate, EdgeProgress, ErrorBody, LocalSpend, UploadAccepted, EdgeHealth)
}
UPLOAD = "POST /federations/{federation_id}/rounds/{round_number}/uploads"


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    """`/openapi.json` as the edge serves it (no lifespan: nothing enrols or reaches a cloud)."""
    settings = EdgeSettings(
        edge_id="edge-north",
        federation_id="fed-test",
        cloud_url="http://cloud.test",
        public_url="http://edge-north.test:8710",
        enrolment_token="edge-enrol-Vq3kZ8pLw2Rt6Yx9",
        key_file=tmp_path / "edge.key",
    )
    response = TestClient(create_app(settings)).get("/openapi.json")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_operation_has_a_summary_a_description_a_tag_and_its_errors(document: dict[str, Any]) -> None:
    tags = {t["name"] for t in document["tags"]}
    for operation in operations(document):
        assert operation.spec.get("summary") and operation.spec.get("description"), str(operation)
        assert operation.spec.get("tags") and set(operation.spec["tags"]) <= tags, str(operation)
        errors = {s: r for s, r in operation.spec["responses"].items() if s[0] in "45"}
        if str(operation) not in NO_CLIENT_ERRORS:
            assert any(s.startswith("4") for s in errors), f"{operation} documents no 4xx"
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{operation} {status}"
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_upload_body_is_the_client_update_schema_with_an_example(document: dict[str, Any]) -> None:
    upload = next(op for op in operations(document) if str(op) == UPLOAD)
    schema = upload.spec["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ClientUpdate"}
    # The binary frame (protocol.upload_frame) is described, not listed: any bytes are a valid binary string.
    assert list(upload.spec["requestBody"]["content"]) == ["application/json"]
    assert "application/octet-stream" in upload.spec["requestBody"]["description"]
    assert request_body_has_example(document, upload)
    # Every reference in the document resolves: no `$defs` left from a schema pasted inline.
    refs = _refs(document)
    assert refs and all(r.startswith("#/components/schemas/") for r in refs), refs
    assert {r.rsplit("/", 1)[-1] for r in refs} <= set(document["components"]["schemas"])


def test_every_example_in_the_document_validates_against_its_model(document: dict[str, Any]) -> None:
    found = examples(document)
    assert {e.schema for e in found} >= {"ClientUpdate", "UploadAccepted", "EdgeProgress", "ErrorBody"}
    for example in found:
        validate(example, MODELS)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()
