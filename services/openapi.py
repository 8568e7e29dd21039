"""OpenAPI helpers the cloud and the edge share: error responses documented as `ErrorBody`, with an example."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
