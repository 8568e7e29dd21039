"""The admin's side of enrolment credentials over the cloud's API: issue a single-use enrolment token for one
edge or hospital id, list the tokens issued, revoke one, rotate a party's
(`/federations/{fid}/enrolment-tokens`). One copy for the CLI, the bootstrap, the launcher and the tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import TypeAdapter

from fedlora.admin_api import ApiError, clients, edges, parse, send
from protocol.messages import (
    EnrolmentTokenInfo,
    EnrolmentTokenIssued,
    EnrolmentTokenRequest,
    EnrolmentTokenState,
    Role,
)

_ISSUED = TypeAdapter(EnrolmentTokenIssued)
_TOKENS = TypeAdapter(list[EnrolmentTokenInfo])


@dataclass(frozen=True)
class Rotated:
    issued: EnrolmentTokenIssued
    revoked: tuple[str, ...]  # digests of the party's unused tokens, now revoked


async def issue_enrolment_token(
    http: httpx.AsyncClient, fid: str, role: Role, subject: str, *, ttl_s: int | None = None
) -> EnrolmentTokenIssued:
    """A token that enrols `subject` as `role` once."""
    fields = {"role": role, "subject": subject, **({"ttl_s": ttl_s} if ttl_s is not None else {})}
    body = EnrolmentTokenRequest.model_validate(fields)  # refuses the admin role, naming the field
    doing = f"issuing an enrolment token for {role.value} {subject!r} in {fid!r}"
    response = await send(http, "POST", f"/federations/{fid}/enrolment-tokens", 201, doing=doing, body=body)
    return parse(_ISSUED, response, doing=doing)


async def list_enrolment_tokens(http: httpx.AsyncClient, fid: str) -> list[EnrolmentTokenInfo]:
    """Every token the cloud keeps for `fid`, issued, used or expired, without secrets."""
    doing = f"listing the enrolment tokens of {fid!r}"
    response = await send(http, "GET", f"/federations/{fid}/enrolment-tokens", 200, doing=doing)
    return parse(_TOKENS, response, doing=doing)


async def revoke_enrolment_token(http: httpx.AsyncClient, fid: str, token_id: str) -> None:
    """Revoke the token whose digest is `token_id`: it enrols nobody from now on."""
    doing = f"revoking enrolment token {token_id!r} of {fid!r}"
    await send(http, "DELETE", f"/federations/{fid}/enrolment-tokens/{token_id}", 204, doing=doing)


async def rotate_enrolment_token(
    http: httpx.AsyncClient, fid: str, role: Role, subject: str, *, ttl_s: int | None = None
) -> Rotated:
    """A new token for a party that has not enrolled yet, and its unused ones revoked (issued first, so a
    failure leaves the old one working). An enrolled party needs none: it re-enrols with its own key alone
    (`POST /federations/{fid}/edges` or `/clients` with a signed challenge), and a token for its id would
    only be refused with another key (409 `conflict`), so that is an `ApiError` (`already_enrolled`)."""
    enrolled = (
        {e.edge_id for e in await edges(http, fid)}
        if role is Role.EDGE
        else {c.client_id for c in await clients(http, fid)}
    )
    if subject in enrolled:
        raise ApiError(
            "already_enrolled",
            f"{role.value} {subject!r} is enrolled in {fid!r}: it re-enrols with its own key and needs no "
            "enrolment token",
        )
    issued = await issue_enrolment_token(http, fid, role, subject, ttl_s=ttl_s)
    unused = [
        t.token_id
        for t in await list_enrolment_tokens(http, fid)
        if t.role is role
        and t.subject == subject
        and t.state is EnrolmentTokenState.ISSUED
        and t.token_id != issued.token_id
    ]
    for token_id in unused:
        await revoke_enrolment_token(http, fid, token_id)
    return Rotated(issued=issued, revoked=tuple(unused))
