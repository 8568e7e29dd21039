"""The admin's calls to the cloud's REST API, one function per operation: create a federation, move it
through its lifecycle, read its rounds, parties and privacy ledger, fetch an adapter. One copy for
`fedlora admin`, the demo launcher and the tests; `http` carries the admin token (`fedlora.cloud_access`).

A refusal raises `ApiError` with the cloud's machine-readable `code` (its `ErrorBody`), so a caller
tells `wrong_round` from `not_found` without parsing text; so does an answer that is not the API's model
(`bad_answer`, e.g. a proxy's HTML page under 200) or that grows past `ANSWER_MAX_BYTES`
(`answer_too_large`, read as a stream and dropped there, so a hostile cloud cannot fill the admin's memory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

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

T = TypeVar("T")
Lifecycle = Literal["start", "pause", "resume", "stop"]

#: The most an answer may hold: JSON answers (a page of rounds, every client of a large federation), and an
#: adapter (its PEFT zip or raw vector).
ANSWER_MAX_BYTES = 64 * 1024 * 1024
ADAPTER_MAX_BYTES = 2 * 1024 * 1024 * 1024

_CREATED = TypeAdapter(FederationCreated)
_FEDERATION = TypeAdapter(FederationInfo)
_ROUND = TypeAdapter(RoundStatus)
_PRIVACY = TypeAdapter(PrivacyReport)
_PLAN = TypeAdapter(RoundPlan)
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


@dataclass(frozen=True)
class Answer:
    """A response read whole, within its size bound."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def check(response: Answer, *expected: int, doing: str) -> Answer:
    """`response` if its status is one of `expected`; otherwise the cloud's refusal as an `ApiError`
    (a body that is no `ErrorBody`, e.g. a proxy's page, becomes code `http_<status>`)."""
    if response.status_code in expected:
        return response
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        excerpt = " ".join(response.text[:300].split())  # one line, whatever the page's layout
        raise ApiError(
            f"http_{response.status_code}", f"{doing}: {excerpt}", status=response.status_code
        ) from None
    where = f" ({body.field})" if body.field else ""
    raise ApiError(body.code.value, f"{doing}: {body.message}{where}", status=response.status_code)


def parse(reader: TypeAdapter[T], response: Answer, *, doing: str) -> T:
    """The API's model in `response`'s body; `ApiError` `bad_answer` for a body that is not it."""
    try:
        return reader.validate_json(response.content)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise ApiError(
            "bad_answer",
            f"{doing}: the cloud's answer (HTTP {response.status_code}, {len(response.content):,} bytes) is not "
            f"the API's model: {where}: {first['msg']}",
            status=response.status_code,
        ) from None


async def send(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    *expected: int,
    doing: str,
    body: BaseModel | None = None,
    max_bytes: int | None = None,
) -> Answer:
    """One request, its answer read as a stream up to `max_bytes` (default `ANSWER_MAX_BYTES`); `ApiError`
    for a refusal, a cloud that cannot be reached (`unreachable`), or an answer past the bound
    (`answer_too_large`)."""
    max_bytes = ANSWER_MAX_BYTES if max_bytes is None else max_bytes
    content = body.model_dump_json() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else None
    too_large = ApiError(
        "answer_too_large", f"{doing}: the cloud's answer is over {max_bytes:,} bytes; nothing of it was kept"
    )
    try:
        async with http.stream(method, path, content=content, headers=headers) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise too_large
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
    except httpx.TransportError as e:
        raise ApiError("unreachable", f"{doing}: cannot reach the cloud at {http.base_url}: {e}") from e
    answer = Answer(response.status_code, response.headers, b"".join(chunks))
    return check(answer, *expected, doing=doing)


async def create_federation(http: httpx.AsyncClient, spec: FederationSpec) -> FederationCreated:
    """A new federation under `spec`: the cloud generates its HE keys and adapter version 0."""
    doing = f"creating {spec.federation_id!r}"
    return parse(_CREATED, await send(http, "POST", "/federations", 201, doing=doing, body=spec), doing=doing)


async def list_federations(http: httpx.AsyncClient) -> list[FederationInfo]:
    return await read(http, "/federations", _FEDERATIONS, doing="listing the federations")


async def federation_info(http: httpx.AsyncClient, fid: str) -> FederationInfo:
    return await read(http, f"/federations/{fid}", _FEDERATION, doing=f"reading {fid!r}")


async def change_lifecycle(http: httpx.AsyncClient, fid: str, action: Lifecycle) -> FederationInfo:
    """Start (open round 0), pause (no new plans), resume or stop (for good) `fid`; its state after."""
    await send(http, "POST", f"/federations/{fid}/{action}", 200, doing=f"{action} {fid!r}")
    # `start` answers with round 0's plan, the others with the federation: read it back for one shape.
    return await federation_info(http, fid)


async def rounds(
    http: httpx.AsyncClient, fid: str, *, offset: int = 0, limit: int = 50
) -> tuple[list[RoundStatus], int]:
    """A page of rounds, newest first, and how many rounds have opened."""
    path = f"/federations/{fid}/rounds?offset={offset}&limit={limit}"
    doing = _reading(path, fid)
    response = await send(http, "GET", path, 200, doing=doing)
    total = response.headers.get("X-Total-Count", "0")
    if not total.isdigit():
        raise ApiError("bad_answer", f"{doing}: X-Total-Count {total[:40]!r} is not a count", status=200)
    return parse(_ROUNDS, response, doing=doing), int(total)


async def round_status(http: httpx.AsyncClient, fid: str, round_: int) -> RoundStatus:
    path = f"/federations/{fid}/rounds/{round_}"
    return await read(http, path, _ROUND, doing=_reading(path, fid))


async def clients(http: httpx.AsyncClient, fid: str, *, edge_id: str | None = None) -> list[ClientInfo]:
    query = f"?edge_id={edge_id}" if edge_id is not None else ""
    path = f"/federations/{fid}/clients{query}"
    return await read(http, path, _CLIENTS, doing=_reading(path, fid))


async def edges(http: httpx.AsyncClient, fid: str) -> list[EdgeInfo]:
    path = f"/federations/{fid}/edges"
    return await read(http, path, _EDGES, doing=_reading(path, fid))


async def privacy(http: httpx.AsyncClient, fid: str) -> PrivacyReport:
    path = f"/federations/{fid}/privacy"
    return await read(http, path, _PRIVACY, doing=_reading(path, fid))


async def adapter_versions(http: httpx.AsyncClient, fid: str) -> list[AdapterVersion]:
    """Every adapter version, oldest first, with its latest evaluation."""
    path = f"/federations/{fid}/adapters"
    return await read(http, path, _VERSIONS, doing=_reading(path, fid))


async def adapter_zip(http: httpx.AsyncClient, fid: str, version: int) -> bytes:
    """Adapter `version` of `fid` as the PEFT adapter zip the cloud builds."""
    path = f"/federations/{fid}/adapters/{version}"
    return (
        await send(http, "GET", path, 200, doing=_reading(path, fid), max_bytes=ADAPTER_MAX_BYTES)
    ).content


async def adapter_vector(http: httpx.AsyncClient, fid: str, version: int) -> bytes:
    """Adapter `version`'s raw vector (float32 little-endian), the bytes a plan's `vector_sha256` names."""
    path = f"/federations/{fid}/adapters/{version}/vector"
    return (
        await send(http, "GET", path, 200, doing=_reading(path, fid), max_bytes=ADAPTER_MAX_BYTES)
    ).content


async def current_plan(http: httpx.AsyncClient, fid: str) -> RoundPlan | None:
    """The plan of the round now open (the admin's whole plan), or None when none is handed out: not
    started, paused (204), or ended (410)."""
    doing = f"reading the current plan of {fid!r}"
    response = await send(http, "GET", f"/federations/{fid}/plan?after_round=-1", 200, 204, 410, doing=doing)
    return parse(_PLAN, response, doing=doing) if response.status_code == 200 else None


async def read(http: httpx.AsyncClient, path: str, reader: TypeAdapter[T], *, doing: str) -> T:
    """GET `path` (200) as the API's model `reader` reads."""
    return parse(reader, await send(http, "GET", path, 200, doing=doing), doing=doing)


def _reading(path: str, fid: str) -> str:
    return f"reading {path.split('?')[0]} of {fid!r}"
