"""What the edge's request limits (`services.limits`) need to know of a request before its body is read.

The edge takes no bearer tokens: a hospital proves who it is with the signature inside its message, which
cannot be checked before the body is read, so every caller is its client IP. Body limits:

- `POST .../uploads`: the largest well-formed `ClientUpdate` of the federation's layout and HE scheme;
- the masking stages' posts: `max_json_body_bytes` and a line (a sealed share, a signature) per hospital of
  the cohort (the hospitals the edge's current plan names);
- every other route: `max_json_body_bytes`.

Before the edge has enrolled it knows neither, so the upload and masking routes answer 503 `NotReadyError`
(with `Retry-After`) at once, as they would after reading the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import Scope

from edge_aggregator.runtime import EdgeRuntime
from services.limits import CONTRIBUTION_BYTES, Admission, client_host, upload_body_bytes
from services.settings import EdgeSettings

_UPLOAD_ROUTE = "upload"
_MASKING_ROUTES = frozenset({"post_advert", "post_shares", "post_consent", "post_unmask_shares"})


@dataclass(frozen=True)
class EdgeAdmission:
    """`services.limits.Admit` for the edge app."""

    settings: EdgeSettings

    async def __call__(self, scope: Scope, route: BaseRoute | None, params: dict[str, Any]) -> Admission:
        limit = self.settings.max_json_body_bytes
        runtime: EdgeRuntime | None = getattr(scope["app"].state, "runtime", None)
        takes_a_sized_body = isinstance(route, APIRoute) and (
            route.name == _UPLOAD_ROUTE or route.name in _MASKING_ROUTES
        )
        edge = runtime.aggregator if runtime is not None else None
        if runtime is not None and takes_a_sized_body:
            # Not enrolled yet: no layout or cohort to size the body by. The route would answer the same
            # once the body is read; a 413 here would tell a hospital to give up on a well-formed upload.
            edge = runtime.ready_aggregator()
        if isinstance(route, APIRoute) and edge is not None:
            if route.name == _UPLOAD_ROUTE:
                limit = upload_body_bytes(edge.scheme, length=edge.config.layout_size)
            elif route.name in _MASKING_ROUTES and edge.plan is not None:
                limit += len(edge.plan.client_ranks) * CONTRIBUTION_BYTES
        return Admission(client_host(scope), limit)
