"""The cloud's HTTP routes, one router per area; handlers stay thin and call the services."""

from __future__ import annotations

from typing import Any

from services.openapi import error_responses

_DESCRIPTIONS = {
    400: "bad request (e.g. `bad_ciphertext`)",
    401: "`unauthenticated`, `bad_signature` or `bad_enrolment_token`",
    403: "`forbidden`: the token's role may not do this",
    404: "`not_found` / `unknown_federation`",
    409: "`conflict`, `wrong_round`, `round_closed`, `wrong_basis`, `plan_mismatch`, `duplicate_upload`; on "
    "enrolment `federation_full`, `enrolment_token_used`, `unknown_challenge` or `edge_url_changed`",
    410: "`federation_not_active`: the federation has ended; on an adapter version, `version_pruned`: its vector "
    "is past the cloud's `retain_versions`",
    413: "`payload_too_large`",
    422: "`invalid_request` naming the field, `too_few_clients`, `unknown_client`",
    503: "`store_unavailable`: the state store did not answer; nothing was written, retry after `Retry-After`",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with an `ErrorBody` and an example of one."""
    return error_responses(_DESCRIPTIONS, *statuses)


TAGS = [
    {"name": "health", "description": "Liveness."},
    {"name": "federations", "description": "Create federations and control their lifecycle (admin)."},
    {
        "name": "enrolment",
        "description": "Single-use enrolment tokens (admin), challenges, and the enrolment of edges and clients.",
    },
    {"name": "rounds", "description": "Round plans, edge aggregates and round status."},
    {"name": "adapters", "description": "Global adapter versions: raw vectors, PEFT adapters, evaluations."},
    {"name": "dashboard", "description": "The operator dashboard (HTML; it asks for the admin token)."},
    {"name": "monitoring", "description": "Prometheus metrics for scraping (no authentication)."},
]
