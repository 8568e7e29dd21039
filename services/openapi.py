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


#: `services.limits` answers any operation 429 (rate, concurrency, long-polls) before it runs.
TOO_MANY_REQUESTS = {
    "description": "`too_many_requests`: over the caller's rate window, concurrency cap or long-poll caps; "
    "retry after `Retry-After` seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": {
                "code": "too_many_requests",
                "message": "client:hospital-a is over its rate limit of 1200 per 1 minute; retry after 12 s",
                "detail": {"limit": "1200 per 1 minute", "retry_after_s": 12},
            },
        }
    },
}
#: ... and 413 to any that reads a body, from `Content-Length` or as it streams.
BODY_TOO_LARGE = {
    "description": "`payload_too_large`: the body is over this route's limit (`detail.limit`, bytes)",
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": {
                "code": "payload_too_large",
                "message": "request body is too large: it has at least 70000 bytes, the limit of this route is "
                "65536",
                "detail": {"limit": 65536},
            },
        }
    },
}


def document_unreadable_bodies(app: FastAPI) -> None:
    """Add `UNREADABLE_BODY` as the 400 of every operation of `app` that reads a body and documents no 400
    of its own, `BODY_TOO_LARGE` as its 413, and `TOO_MANY_REQUESTS` as every operation's 429 (the request
    limits', `services.limits`), routes added later included (the document is built on its first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    if not isinstance(operation, dict) or "responses" not in operation:
                        continue
                    operation["responses"].setdefault("429", TOO_MANY_REQUESTS)
                    if "requestBody" in operation:
                        operation["responses"].setdefault("400", UNREADABLE_BODY)
                        operation["responses"].setdefault("413", BODY_TOO_LARGE)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
