"""Who is calling: the bearer token resolved to a principal, and the role checks routes declare.

- admin: `CloudSettings.admin_token` (or, while a new one rolls out, `admin_token_previous`), compared in
  constant time;
- edge / client: an API token from enrolment, looked up by its SHA-256 in the path's federation;
- enrolment: a single-use enrolment token bound to one edge or hospital id, checked by the enrolment itself
  (`cloud_server.enrolment_tokens.admit`) in the transaction that spends it; a re-enrolment carries none.

A missing, unknown or revoked token is 401 `unauthenticated`; a valid token of the wrong role is 403.

Mutual TLS: a cloud that serves TLS (`tls_cert_file`) takes an edge's token, and an edge's enrolment, only
over a connection whose client certificate (verified against the federation's CA in the handshake) names
that very edge, `fedlora://<fid>/edge/<edge id>` (`require_edge_certificate`): an edge token stolen
without the edge's certificate key is useless. Without one: 401 `client_certificate_required`; a
certificate naming another party: 403 `client_certificate_mismatch`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from cloud_server.context import CloudContext
from cloud_server.deps import ContextDep
from cloud_server.errors import UnauthenticatedError
from protocol.messages import ErrorCode, Role
from services.errors import ForbiddenError
from services.identity import token_digest, tokens_equal
from services.settings import CloudSettings
from services.tls import party_uri, peer_uris

log = logging.getLogger("fedlora.cloud")

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The admin token, an edge's or client's enrolment token, or its API token",
)


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or not credentials.credentials:
        raise UnauthenticatedError("this endpoint needs `Authorization: Bearer <token>`")
    return credentials.credentials


TokenDep = Annotated[str, Depends(bearer_token)]


async def optional_bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return credentials.credentials if credentials is not None and credentials.credentials else None


OptionalTokenDep = Annotated[str | None, Depends(optional_bearer_token)]


async def resolve_principal(token: str, fid: str | None, context: CloudContext, *, scope: Scope) -> Principal:
    """The principal `token` names (in federation `fid`, for an edge's or client's API token) on the
    connection of `scope` (an edge's must carry its certificate); 401 `unauthenticated` for an unknown or
    revoked token."""
    if tokens_equal(token, context.settings.admin_token.get_secret_value()):
        return Principal(Role.ADMIN, "admin")
    previous = context.settings.admin_token_previous
    if previous is not None and tokens_equal(token, previous.get_secret_value()):
        log.warning(
            "a call used the previous admin token; unset FEDLORA_ADMIN_TOKEN_PREVIOUS once rolled out"
        )
        return Principal(Role.ADMIN, "admin")
    if fid is not None:
        record = await context.enrolment.token_subject(fid, token_digest(token))
        if record is not None:
            if record.role is Role.EDGE:
                require_edge_certificate(scope, context.settings, fid, record.subject)
            return Principal(record.role, record.subject)
    raise UnauthenticatedError("unknown or revoked token")


async def principal(request: Request, token: TokenDep, context: ContextDep) -> Principal:
    """The caller, as the request limits resolved it before the body was read (`cloud_server.limits`), or
    resolved here for an app run without them."""
    admitted = getattr(request.state, "principal", None)
    if isinstance(admitted, Principal):
        return admitted
    return await resolve_principal(token, request.path_params.get("fid"), context, scope=request.scope)


PrincipalDep = Annotated[Principal, Depends(principal)]


def require_edge_certificate(scope: Scope, settings: CloudSettings, fid: str, edge_id: str) -> None:
    """Refuse an edge's request unless its connection presented a CA-verified certificate naming
    `edge_id` in `fid` (a cloud serving plain http, `allow_plain_http`, has no certificates to check)."""
    if settings.tls_cert_file is None:
        return
    expected = party_uri(fid, Role.EDGE.value, edge_id)
    uris = peer_uris(scope)
    if uris is None:
        raise UnauthenticatedError(
            f"edge {edge_id!r} must present its client certificate ({expected}) on this connection",
            code=ErrorCode.CLIENT_CERTIFICATE_REQUIRED,
        )
    if expected not in uris:
        raise ForbiddenError(
            f"the connection's client certificate names {uris}, not edge {edge_id!r}",
            code=ErrorCode.CLIENT_CERTIFICATE_MISMATCH,
            detail={"expected": expected},
        )


def _allow(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    names = " or ".join(role.value for role in roles)

    async def check(who: PrincipalDep) -> Principal:
        if who.role not in roles:
            raise ForbiddenError(f"this endpoint is for {names}; the token is a {who.role.value}'s")
        return who

    return check


AdminDep = Annotated[Principal, Depends(_allow(Role.ADMIN))]
EdgeDep = Annotated[Principal, Depends(_allow(Role.EDGE))]
AdminOrEdgeDep = Annotated[Principal, Depends(_allow(Role.ADMIN, Role.EDGE))]
AdminOrClientDep = Annotated[Principal, Depends(_allow(Role.ADMIN, Role.CLIENT))]
MemberDep = Annotated[Principal, Depends(_allow(Role.ADMIN, Role.EDGE, Role.CLIENT))]
