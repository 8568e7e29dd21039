"""What the cloud's request limits (`services.limits`) need to know of a request before its body is read:
its caller (the bearer token resolved, 401 here for a route that needs one; `edge:<federation>/<id>`,
`client:<federation>/<id>` or `admin`), its body limit and whether it is a long-poll.

- `POST .../rounds/{n}/aggregate` (an edge's sum): the federation's largest well-formed aggregate, from its
  layout and HE scheme: the round's ciphertext and one per late bucket the spec allows, the masking
  correction, a manifest line per hospital it may hold;
- every other route: `max_json_body_bytes`;
- `GET .../plan?wait=...` with a wait: a long-poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers, QueryParams
from starlette.routing import BaseRoute
from starlette.types import Scope

from cloud_server.auth import principal, resolve_principal
from cloud_server.context import CloudContext
from cloud_server.errors import NotFoundError, UnauthenticatedError
from protocol.messages import Role
from services.limits import Admission, client_host, upload_body_bytes
from services.settings import CloudSettings

_UPLOAD_ROUTE = "post_aggregate"
_LONG_POLL_ROUTE = "plan"


@dataclass
class CloudAdmission:
    """`services.limits.Admit` for the cloud app."""

    settings: CloudSettings
    _needs_token: dict[int, bool] = field(default_factory=dict)

    async def __call__(self, scope: Scope, route: BaseRoute | None, params: dict[str, Any]) -> Admission:
        json_limit = self.settings.max_json_body_bytes
        if not isinstance(route, APIRoute):
            return Admission(client_host(scope), json_limit)
        context: CloudContext = scope["app"].state.cloud
        fid = params.get("fid")
        state = None
        caller = client_host(scope)
        if self._authenticated(route):
            scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
            if scheme.lower() != "bearer" or not token:
                raise UnauthenticatedError("this endpoint needs `Authorization: Bearer <token>`")
            who = await resolve_principal(token, fid, context, scope=scope)
            # An edge's or hospital's id is unique in its federation only: the federation is part of its key.
            caller = "admin" if who.role is Role.ADMIN else f"{who.role.value}:{fid}/{who.subject}"
            state = {"principal": who}
        limit = json_limit
        if route.name == _UPLOAD_ROUTE and isinstance(fid, str):
            limit = await _aggregate_limit(context, fid, default=json_limit)
        long_poll = route.name == _LONG_POLL_ROUTE and _waits(scope)
        return Admission(caller, limit, long_poll=long_poll, state=state)

    def _authenticated(self, route: APIRoute) -> bool:
        """Whether the route's dependencies resolve a principal (every route but health, metrics, the
        dashboard page and enrolment, whose token is checked with the body it is spent on)."""
        known = self._needs_token.get(id(route))
        if known is None:
            known = self._needs_token[id(route)] = _depends_on(route.dependant, principal)
        return known


def _waits(scope: Scope) -> bool:
    """Whether a plan poll asks to wait (an unreadable `wait` counts: the route answers it 422)."""
    wait = QueryParams(scope.get("query_string", b"")).get("wait", "0")
    try:
        return float(wait) > 0
    except ValueError:
        return True


def _depends_on(dependant: Any, call: Any) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


async def _aggregate_limit(context: CloudContext, fid: str, *, default: int) -> int:
    try:
        spec = await context.federations.spec(fid)
        scheme = await context.federations.public_scheme(fid)
        layout, _ = await context.federations.layout(fid)
    except NotFoundError:
        return default  # the route answers 404 itself
    late = spec.late_uploads.max_staleness if spec.late_uploads is not None else 0
    correction = (scheme.ring_bits + 7) // 8 * layout.size if scheme.ring_bits is not None else 0
    return upload_body_bytes(
        scheme,
        length=layout.size,
        ciphertexts=1 + late,
        extra_bytes=correction,
        clients=spec.max_clients * (1 + late),
    )
