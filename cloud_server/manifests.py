"""The checks on an edge's manifest before its sum is accepted: who is inside it, and enough of them.

The cloud decrypts only a total of sums whose signed manifests each name at least `k` distinct clients
enrolled at that edge and asked to join the round, never anything a single client could be singled out in.
"""

from __future__ import annotations

from collections.abc import Mapping

from cloud_server.errors import ForbiddenError, UnprocessableError
from protocol.messages import ClientInfo, EdgeAggregate, ErrorCode, RoundPlan


def check_manifest(
    aggregate: EdgeAggregate,
    *,
    plan: RoundPlan,
    clients: Mapping[str, ClientInfo],
    min_clients: int,
    max_weight: float | None = None,
) -> None:
    """Raise unless the manifest names at least `min_clients` distinct clients of this edge in the plan,
    each at or below its planned rank and (with central DP) weighted by at most `max_weight`."""
    ids = [c.client_id for c in aggregate.contributions]
    if len(set(ids)) != len(ids):
        raise UnprocessableError("the manifest names a client more than once", field="contributions")
    if len(ids) < min_clients:
        raise UnprocessableError(
            f"the manifest names {len(ids)} clients; this federation accepts only sums of at least "
            f"{min_clients} (min_clients_per_edge)",
            code=ErrorCode.TOO_FEW_CLIENTS,
            field="contributions",
            detail={"count": len(ids), "min_clients_per_edge": min_clients},
        )
    for index, contribution in enumerate(aggregate.contributions):
        cid = contribution.client_id
        where = f"contributions.{index}.client_id"
        info = clients.get(cid)
        if info is None:
            raise UnprocessableError(
                f"client {cid!r} is not enrolled", code=ErrorCode.UNKNOWN_CLIENT, field=where
            )
        if info.edge_id != aggregate.edge_id:
            raise UnprocessableError(
                f"client {cid!r} is enrolled at edge {info.edge_id!r}, not {aggregate.edge_id!r}",
                code=ErrorCode.UNKNOWN_CLIENT,
                field=where,
            )
        planned_rank = plan.client_ranks.get(cid)
        if planned_rank is None:
            raise ForbiddenError(f"client {cid!r} is not in round {plan.round}'s plan", field=where)
        if max_weight is not None and contribution.weight > max_weight:
            raise UnprocessableError(
                f"client {cid!r} weighs its delta by {contribution.weight}; with central DP a weight above "
                f"{max_weight:g} would make one client move the sum by more than the clip norm",
                field=f"contributions.{index}.weight",
            )
        if contribution.rank > planned_rank:
            raise UnprocessableError(
                f"client {cid!r} reports rank {contribution.rank}, above its planned rank {planned_rank}",
                field=f"contributions.{index}.rank",
            )
