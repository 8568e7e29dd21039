from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from cloud_server.auth import AdminDep, AdminOrEdgeDep, EdgeDep, MemberDep
from cloud_server.deps import RoundsDep
from cloud_server.routes import errors
from protocol.messages import EdgeAggregate, RoundPlan, RoundStatus

router = APIRouter(prefix="/federations/{fid}", tags=["rounds"])

RoundId = Annotated[int, Path(ge=0, description="round id")]


@router.post("/start", summary="Open round 0", responses=errors(401, 403, 404, 409, 410))
async def start(fid: str, _: AdminDep, rounds: RoundsDep) -> RoundPlan:
    """Round 0's plan asks every enrolled client to join; 409 if the federation has already started."""
    return await rounds.start(fid)


@router.get(
    "/plan",
    summary="The current round plan (long-poll)",
    response_model=RoundPlan,
    responses={
        204: {"description": "no plan after `after_round` within `wait` seconds"},
        **errors(401, 403, 404, 410),
    },
)
async def plan(
    fid: str,
    _: MemberDep,
    rounds: RoundsDep,
    after_round: Annotated[int, Query(ge=-1, description="answer only with a round greater than this")] = -1,
    wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait (capped by the cloud)")] = 0.0,
) -> RoundPlan | Response:
    found = await rounds.wait_for_plan(fid, after_round, wait_s=wait)
    return found if found is not None else Response(status_code=204)


@router.post(
    "/rounds/{n}/aggregates",
    status_code=202,
    summary="An edge forwards its signed sum",
    responses={
        200: {"description": "the same aggregate again: counted once"},
        **errors(400, 401, 403, 404, 409, 410, 413, 422),
    },
)
async def post_aggregate(
    fid: str, n: RoundId, body: EdgeAggregate, edge: EdgeDep, rounds: RoundsDep, response: Response
) -> RoundStatus:
    status, stored = await rounds.receive(fid, n, body, edge_id=edge.subject)
    response.status_code = 202 if stored else 200
    return status


@router.get("/rounds", summary="Rounds, newest first", responses=errors(401, 403, 404))
async def list_rounds(
    fid: str,
    _: AdminDep,
    rounds: RoundsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RoundStatus]:
    return await rounds.statuses(fid, offset=offset, limit=limit)


@router.get("/rounds/{n}", summary="One round's status", responses=errors(401, 403, 404))
async def get_round(fid: str, n: RoundId, _: AdminOrEdgeDep, rounds: RoundsDep) -> RoundStatus:
    return await rounds.status(fid, n)
