"""Who is calling: the bearer token resolved to a principal, and the role checks routes declare.

- admin: `CloudSettings.admin_token` (or, while a new one rolls out, `admin_token_previous`), compared in
  constant time;
- edge / client: an API token from enrolment, looked up by its SHA-256 in the path's federation;
- enrolment: a single-use enrolment token bound to one edge or hospital id, checked by the enrolment itself
  (`cloud_server.enrolment_tokens.admit`) in the transaction that spends it; a re-enrolment carries none.

A missing, unknown or revoked token is 401 `unauthenticated`; a valid token of the wrong role is 403.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_server.deps import ContextDep
from cloud_server.errors import UnauthenticatedError
from protocol.messages import Role
from services.errors import ForbiddenError
from services.identity import token_digest, tokens_equal

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


async def principal(request: Request, token: TokenDep, context: ContextDep) -> Principal:
    if tokens_equal(token, context.settings.admin_token.get_secret_value()):
        return Principal(Role.ADMIN, "admin")
    previous = context.settings.admin_token_previous
    if previous is not None and tokens_equal(token, previous.get_secret_value()):
        log.warning(
            "a call used the previous admin token; unset FEDLORA_ADMIN_TOKEN_PREVIOUS once rolled out"
        )
        return Principal(Role.ADMIN, "admin")
    fid = request.path_params.get("fid")
    if fid is not None:
        record = await context.enrolment.token_subject(fid, token_digest(token))
        if record is not None:
            return Principal(record.role, record.subject)
    raise UnauthenticatedError("unknown or revoked token")


PrincipalDep = Annotated[Principal, Depends(principal)]


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
