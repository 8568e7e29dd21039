"""The admin's side of enrolment credentials over the cloud's API: issue a single-use enrolment token for one
edge or hospital id, list the tokens issued, revoke one (`/federations/{fid}/enrolment-tokens`). One copy
for the CLI, the bootstrap, the launcher and the tests."""

from __future__ import annotations

import httpx
from pydantic import TypeAdapter

from protocol.messages import EnrolmentTokenInfo, EnrolmentTokenIssued, EnrolmentTokenRequest, Role

_TOKENS = TypeAdapter(list[EnrolmentTokenInfo])


class EnrolmentTokenError(RuntimeError):
    """The cloud did not issue the token (its status and body say why)."""


async def issue_enrolment_token(
    http: httpx.AsyncClient, fid: str, role: Role, subject: str, *, ttl_s: int | None = None
) -> EnrolmentTokenIssued:
    """A token that enrols `subject` as `role` once; `http` carries the admin token."""
    fields = {"role": role, "subject": subject, **({"ttl_s": ttl_s} if ttl_s is not None else {})}
    body = EnrolmentTokenRequest.model_validate(fields)  # refuses the admin role, naming the field
    response = await http.post(
        f"/federations/{fid}/enrolment-tokens",
        content=body.model_dump_json(),
        headers={"Content-Type": "application/json"},
    )
    if response.status_code != 201:
        raise EnrolmentTokenError(
            f"issuing an enrolment token for {role.value} {subject!r} in {fid!r} failed: "
            f"{response.status_code} {response.text[:500]}"
        )
    return EnrolmentTokenIssued.model_validate_json(response.content)


async def list_enrolment_tokens(http: httpx.AsyncClient, fid: str) -> list[EnrolmentTokenInfo]:
    """Every token the cloud keeps for `fid`, issued, used or expired, without secrets."""
    response = await http.get(f"/federations/{fid}/enrolment-tokens")
    if response.status_code != 200:
        raise EnrolmentTokenError(
            f"listing the enrolment tokens of {fid!r} failed: {response.status_code} {response.text[:500]}"
        )
    return _TOKENS.validate_json(response.content)


async def revoke_enrolment_token(http: httpx.AsyncClient, fid: str, token_id: str) -> None:
    """Revoke the token whose digest is `token_id`: it enrols nobody from now on."""
    response = await http.delete(f"/federations/{fid}/enrolment-tokens/{token_id}")
    if response.status_code != 204:
        raise EnrolmentTokenError(
            f"revoking enrolment token {token_id!r} of {fid!r} failed: {response.status_code} "
            f"{response.text[:500]}"
        )
