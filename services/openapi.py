"""OpenAPI helpers the cloud and the edge share: error responses documented as `ErrorBody`, with an example."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from protocol.examples import ERRORS_BY_STATUS
from protocol.messages import ErrorBody


def error_responses(
    descriptions: Mapping[int, str],
    *statuses: int,
    examples: Mapping[int, Mapping[str, Any]] = ERRORS_BY_STATUS,
) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses` for these error statuses: each an `ErrorBody`, described and with an example."""
    return {
        status: {
            "model": ErrorBody,
            "description": descriptions[status],
            "content": {"application/json": {"example": dict(examples[status])}},
        }
        for status in statuses
    }


#: FastAPI answers a body it cannot decode (not UTF-8) with 400 before any route runs.
UNREADABLE_BODY = {
    "description": "`invalid_request`: the body could not be read (not UTF-8 text)",
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": {"code": "invalid_request", "message": "There was an error parsing the body"},
        }
    },
}


def document_unreadable_bodies(app: FastAPI) -> None:
    """Add `UNREADABLE_BODY` as the 400 of every operation of `app` that reads a body and documents no 400
    of its own, routes added later included (the document is built on its first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    if isinstance(operation, dict) and "requestBody" in operation:
                        operation["responses"].setdefault("400", UNREADABLE_BODY)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
