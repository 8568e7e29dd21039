"""The admin's calls to the cloud's REST API, one function per operation: create a federation, move it
through its lifecycle, read its rounds, parties and privacy ledger, fetch an adapter. One copy for
`fedlora admin`, the demo launcher and the tests; `http` carries the admin token (`fedlora.cloud_access`).

A refusal raises `ApiError` with the cloud's machine-readable `code` (its `ErrorBody`), so a caller
tells `wrong_round` from `not_found` without parsing text."""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from protocol.messages import (
    AdapterVersion,
    ClientInfo,
    EdgeInfo,
    ErrorBody,
    FederationCreated,
    FederationInfo,
    FederationSpec,
    PrivacyReport,
    RoundPlan,
    RoundStatus,
)

Lifecycle = Literal["start", "pause", "resume", "stop"]

_FEDERATIONS = TypeAdapter(list[FederationInfo])
_ROUNDS = TypeAdapter(list[RoundStatus])
_CLIENTS = TypeAdapter(list[ClientInfo])
_EDGES = TypeAdapter(list[EdgeInfo])
_VERSIONS = TypeAdapter(list[AdapterVersion])


class ApiError(RuntimeError):
    """The cloud refused a request (`code` from its error body, `status` its HTTP status) or could not be
    read (`code` `unreachable`, `status` None)."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}")


def check(response: httpx.Response, *expected: int, doing: str) -> httpx.Response:
    """`response` if its status is one of `expected`; otherwise the cloud's refusal as an `ApiError`
    (a body that is no `ErrorBody`, e.g. a proxy's page, becomes code `http_<status>`)."""
    if response.status_code in expected:
        return response
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        raise ApiError(
            f"http_{response.status_code}", f"{doing}: {response.text[:300]}", status=response.status_code
        ) from None
    where = f" ({body.field})" if body.field else ""
    raise ApiError(body.code.value, f"{doing}: {body.message}{where}", status=response.status_code)


async def send(
    http: httpx.AsyncClient, method: str, path: str, *expected: int, doing: str, body: BaseModel | None = None
) -> httpx.Response:
    """One request; `ApiError` for a refusal or a cloud that cannot be reached."""
    content = body.model_dump_json() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        response = await http.request(method, path, content=content, headers=headers)
    except httpx.TransportError as e:
        raise ApiError("unreachable", f"{doing}: cannot reach the cloud at {http.base_url}: {e}") from e
    return check(response, *expected, doing=doing)


async def create_federation(http: httpx.AsyncClient, spec: FederationSpec) -> FederationCreated:
    """A new federation under `spec`: the cloud generates its HE keys and adapter version 0."""
    fid = spec.federation_id
    response = await send(http, "POST", "/federations", 201, doing=f"creating {fid!r}", body=spec)
    return FederationCreated.model_validate_json(response.content)


async def list_federations(http: httpx.AsyncClient) -> list[FederationInfo]:
    response = await send(http, "GET", "/federations", 200, doing="listing the federations")
    return _FEDERATIONS.validate_json(response.content)


async def federation_info(http: httpx.AsyncClient, fid: str) -> FederationInfo:
    response = await send(http, "GET", f"/federations/{fid}", 200, doing=f"reading {fid!r}")
    return FederationInfo.model_validate_json(response.content)


async def change_lifecycle(http: httpx.AsyncClient, fid: str, action: Lifecycle) -> FederationInfo:
    """Start (open round 0), pause (no new plans), resume or stop (for good) `fid`; its state after."""
    await send(http, "POST", f"/federations/{fid}/{action}", 200, doing=f"{action} {fid!r}")
    # `start` answers with round 0's plan, the others with the federation: read it back for one shape.
    return await federation_info(http, fid)


async def rounds(
    http: httpx.AsyncClient, fid: str, *, offset: int = 0, limit: int = 50
) -> tuple[list[RoundStatus], int]:
    """A page of rounds, newest first, and how many rounds have opened."""
    response = await http_get(http, f"/federations/{fid}/rounds?offset={offset}&limit={limit}", fid)
    return _ROUNDS.validate_json(response.content), int(response.headers.get("X-Total-Count", "0"))


async def round_status(http: httpx.AsyncClient, fid: str, round_: int) -> RoundStatus:
    response = await http_get(http, f"/federations/{fid}/rounds/{round_}", fid)
    return RoundStatus.model_validate_json(response.content)


async def clients(http: httpx.AsyncClient, fid: str, *, edge_id: str | None = None) -> list[ClientInfo]:
    query = f"?edge_id={edge_id}" if edge_id is not None else ""
    return _CLIENTS.validate_json((await http_get(http, f"/federations/{fid}/clients{query}", fid)).content)


async def edges(http: httpx.AsyncClient, fid: str) -> list[EdgeInfo]:
    return _EDGES.validate_json((await http_get(http, f"/federations/{fid}/edges", fid)).content)


async def privacy(http: httpx.AsyncClient, fid: str) -> PrivacyReport:
    return PrivacyReport.model_validate_json(
        (await http_get(http, f"/federations/{fid}/privacy", fid)).content
    )


async def adapter_versions(http: httpx.AsyncClient, fid: str) -> list[AdapterVersion]:
    """Every adapter version, oldest first, with its latest evaluation."""
    return _VERSIONS.validate_json((await http_get(http, f"/federations/{fid}/adapters", fid)).content)


async def adapter_zip(http: httpx.AsyncClient, fid: str, version: int) -> bytes:
    """Adapter `version` of `fid` as the PEFT adapter zip the cloud builds."""
    return (await http_get(http, f"/federations/{fid}/adapters/{version}", fid)).content


async def adapter_vector(http: httpx.AsyncClient, fid: str, version: int) -> bytes:
    """Adapter `version`'s raw vector (float32 little-endian), the bytes a plan's `vector_sha256` names."""
    return (await http_get(http, f"/federations/{fid}/adapters/{version}/vector", fid)).content


async def current_plan(http: httpx.AsyncClient, fid: str) -> RoundPlan | None:
    """The plan of the round now open (the admin's whole plan), or None when none is handed out: not
    started, paused (204), or ended (410)."""
    doing = f"reading the current plan of {fid!r}"
    response = await send(http, "GET", f"/federations/{fid}/plan?after_round=-1", 200, 204, 410, doing=doing)
    return RoundPlan.model_validate_json(response.content) if response.status_code == 200 else None


async def http_get(http: httpx.AsyncClient, path: str, fid: str) -> httpx.Response:
    return await send(http, "GET", path, 200, doing=f"reading {path.split('?')[0]} of {fid!r}")
