from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response

from cloud_server.auth import AdminDep, AdminOrEdgeDep, EdgeDep, MemberDep
from cloud_server.deps import ContextDep, RoundsDep
from cloud_server.routes import errors
from protocol.messages import (
    CLOUD_ANSWERED_AT_HEADER,
    CLOUD_RECEIVED_AT_HEADER,
    EdgeAggregate,
    Role,
    RoundPlan,
    RoundStatus,
)

router = APIRouter(prefix="/federations/{fid}", tags=["rounds"], responses=errors(503))

RoundId = Annotated[int, Path(ge=0, description="round id")]

_TIME_HEADERS = {
    CLOUD_RECEIVED_AT_HEADER: {
        "description": "the cloud's time (ISO 8601, UTC) when the poll arrived",
        "schema": {"type": "string", "format": "date-time"},
    },
    CLOUD_ANSWERED_AT_HEADER: {
        "description": "the cloud's time when it answered: with the poll's own send and receive times, the "
        "caller's clock offset is ((received_at - sent) + (answered_at - received)) / 2",
        "schema": {"type": "string", "format": "date-time"},
    },
}

_PAGE_HEADERS = {
    "X-Total-Count": {
        "description": "rounds opened so far, whatever the page (round ids run from 0 to this - 1)",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Link": {
        "description": "RFC 8288 links to the neighbouring pages, e.g. `</federations/f/rounds?offset=2&limit=2>; "
        'rel="next"`: `rel="next"` while older rounds remain, `rel="prev"` when `offset` > 0; absent when '
        "the page holds every round",
        "schema": {"type": "string"},
    },
}


def page_links(request: Request, *, offset: int, limit: int, total: int) -> str | None:
    """The `Link` header of a page: relative references (RFC 8288, section 3.1), so they stay right behind
    a proxy that rewrites the host or terminates TLS."""
    links = []
    if offset + limit < total:
        links.append((offset + limit, "next"))
    if offset > 0:
        links.append((max(0, offset - limit), "prev"))
    path = request.url.path
    return (
        ", ".join(f'<{path}?{urlencode({"offset": o, "limit": limit})}>; rel="{rel}"' for o, rel in links)
        or None
    )


@router.post("/start", summary="Open round 0", responses=errors(401, 403, 404, 409, 410, 422))
async def start(fid: str, _: AdminDep, rounds: RoundsDep) -> RoundPlan:
    """Round 0's plan asks every enrolled client to join; 409 if the federation has already started or no
    client has enrolled yet."""
    return await rounds.start(fid)


@router.get(
    "/plan",
    summary="The current round plan (long-poll)",
    response_model=RoundPlan,
    responses={
        200: {"description": "the current plan", "headers": _TIME_HEADERS},
        204: {"description": "no plan after `after_round` within `wait` seconds", "headers": _TIME_HEADERS},
        **errors(401, 403, 404, 410, 422),
    },
)
async def plan(
    fid: str,
    who: MemberDep,
    rounds: RoundsDep,
    context: ContextDep,
    request: Request,
    response: Response,
    after_round: Annotated[int, Query(ge=-1, description="answer only with a round greater than this")] = -1,
    wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait (capped by the cloud)")] = 0.0,
    clock_offset_s: Annotated[
        float | None,
        # Any finite offset: an edge whose clock is days off still polls (and raises the skew alert).
        Query(
            allow_inf_nan=False,
            description="an edge's last measured offset of the cloud's time to its own clock, in seconds",
        ),
    ] = None,
) -> RoundPlan | Response:
    """Edges and clients poll this with the last round they saw: the answer comes as soon as a newer plan
    is published (or 204 after `wait` seconds). Every plan is signed with the federation's plan key
    (`FederationInfo.plan_public_key`) and names the SHA-256 of the adapter and basis bytes it starts from.
    An edge, and a hospital, is answered with its edge's view (`edge_id` set; `client_ranks` names that
    edge's hospitals only, every other field is the round's), signed on its own; the admin reads the whole
    plan (`client_edges` places every hospital). Nothing while the federation is paused; 410 once it has ended, with its state in `detail`.

    Every answer carries the cloud's time when the poll arrived and when it was answered (the deadlines'
    clock), from which the caller measures its clock's offset; an edge reports its last measured offset in
    `clock_offset_s` (kept for `GET /edges` and the `fedlora_edge_clock_offset_seconds` gauge). A poll whose
    caller disconnects stops waiting at once (its long-poll slot is free for the next)."""
    received_at = await context.clock()
    if clock_offset_s is not None and who.role is Role.EDGE:
        await context.edge_clocks.report(fid, who.subject, clock_offset_s)
    found = await rounds.wait_for_plan(fid, after_round, wait_s=wait, gone=lambda: disconnected(request))
    if found is not None:
        found = await rounds.plan_for(fid, found, role=who.role, subject=who.subject)
    answer = response if found is not None else Response(status_code=204)
    answer.headers[CLOUD_RECEIVED_AT_HEADER] = received_at.isoformat()
    answer.headers[CLOUD_ANSWERED_AT_HEADER] = (await context.clock()).isoformat()
    return found if found is not None else answer


async def disconnected(request: Request) -> None:
    """Return once the request's client has gone: a plan poll has no body, so every message the server
    sends after the (empty) request is its `http.disconnect`."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


@router.post(
    "/rounds/{n}/aggregates",
    status_code=202,
    summary="An edge forwards its signed sum",
    responses={
        200: {"description": "the same aggregate again: counted once", "model": RoundStatus},
        **errors(400, 401, 403, 404, 409, 410, 413, 422),
    },
)
async def post_aggregate(
    fid: str, n: RoundId, body: EdgeAggregate, edge: EdgeDep, rounds: RoundsDep, response: Response
) -> RoundStatus:
    """The cloud checks the edge's signature, the round and basis, the plan digest (`plan_sha256`, and each
    late bucket's, must be that of the edge's view of the stored plan: 409 `plan_mismatch` otherwise), the manifest (clients enrolled
    at this edge, in the plan, at least `min_clients_per_edge`) and the ciphertext's header, whose count must
    be the manifest's (400 `bad_ciphertext`), then stores it, refusing a ciphertext it accepted before in any
    round, bucket or edge (409 `replay`) and a client already in an accepted sum for the round (409
    `duplicate_upload`). Once every expected edge has forwarded (or at the round deadline) it decrypts only
    the total and closes the round. Idempotent per `idempotency_key`: the same body again is answered 200 and
    counted once; another body for the same edge and round is 409 `duplicate_upload`."""
    status, stored = await rounds.receive(fid, n, body, edge_id=edge.subject)
    response.status_code = 202 if stored else 200
    return status


@router.get(
    "/rounds",
    summary="Rounds, newest first (paginated)",
    responses={
        200: {"description": "a page of rounds", "headers": _PAGE_HEADERS},
        **errors(401, 403, 404, 422),
    },
)
async def list_rounds(
    fid: str,
    _: AdminDep,
    rounds: RoundsDep,
    request: Request,
    response: Response,
    offset: Annotated[int, Query(ge=0, description="rounds to skip, counting from the newest")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="rounds in the page")] = 50,
) -> list[RoundStatus]:
    """Each round's status with per-edge progress (uploads, bytes, when the cloud accepted the edge's
    aggregate) and, once over, its duration. `X-Total-Count` says how many rounds have opened; `Link`
    carries the next (older) and previous pages, so a client can follow `rel="next"` until it is absent."""
    page, total = await rounds.statuses(fid, offset=offset, limit=limit)
    response.headers["X-Total-Count"] = str(total)
    if (links := page_links(request, offset=offset, limit=limit, total=total)) is not None:
        response.headers["Link"] = links
    return page


@router.get("/rounds/{n}", summary="One round's status", responses=errors(401, 403, 404, 422))
async def get_round(fid: str, n: RoundId, _: AdminOrEdgeDep, rounds: RoundsDep) -> RoundStatus:
    """`open`, `collecting` (some edges forwarded) or `aggregating` (closing) while it runs, read from the
    stored aggregates; `closed` or `failed` once over, with `closed_at` and `duration_s`."""
    return await rounds.status(fid, n)
