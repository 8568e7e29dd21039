"""The checks on an edge's manifest before its sum is accepted: who is inside it, and enough of them.

The cloud decrypts only a total of sums whose signed manifests each name at least `k` distinct clients
enrolled at that edge for the round (a move asked for while a round is open takes effect after it:
`ClientInfo.at_round`) and asked to join the round, never anything a single client could be singled out in.
Every line is signed by the client it names, for its federation and round (`Contribution.signing_payload`),
so an edge cannot fill a manifest with clients that never uploaded to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from cloud_server.errors import BadRequestError
from protocol.messages import ClientInfo, Contribution, EdgeAggregate, ErrorCode, RoundPlan
from services.errors import ForbiddenError, InvalidRequestError
from services.identity import IdentityError, verify


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
    check_contributions(
        aggregate.contributions,
        edge_id=aggregate.edge_id,
        plan=plan,
        clients=clients,
        min_clients=min_clients,
        max_weight=max_weight,
    )


def check_late(
    aggregate: EdgeAggregate,
    *,
    plans: Mapping[int, RoundPlan],
    clients: Mapping[str, ClientInfo],
    min_clients: int,
    max_staleness: int | None,
    max_weight: float | None = None,
) -> None:
    """Raise unless every late bucket is allowed (`late_uploads` on, at most `max_staleness` rounds late)
    and its manifest passes the same checks against its own round's plan (`plans`: origin round -> plan)."""
    for index, bucket in enumerate(aggregate.late):
        field = f"late.{index}"
        staleness = aggregate.round - bucket.origin_round
        if max_staleness is None:
            raise InvalidRequestError(
                "this federation does not take late uploads (late_uploads is not set)", field=field
            )
        if staleness > max_staleness:
            raise InvalidRequestError(
                f"the bucket of round {bucket.origin_round} is {staleness} rounds late; this federation takes "
                f"at most {max_staleness}",
                field=f"{field}.origin_round",
            )
        check_contributions(
            bucket.contributions,
            edge_id=aggregate.edge_id,
            plan=plans[bucket.origin_round],
            clients=clients,
            min_clients=min_clients,
            max_weight=max_weight,
            field=f"{field}.contributions",
        )


def check_contributions(
    contributions: Sequence[Contribution],
    *,
    edge_id: str,
    plan: RoundPlan,
    clients: Mapping[str, ClientInfo],
    min_clients: int,
    max_weight: float | None = None,
    field: str = "contributions",
) -> None:
    """The checks of `check_manifest` on one list of contributions, made for `plan`'s round; errors name
    `field`. `clients` are the records as of that round or a later one (each is read `at_round`)."""
    ids = [c.client_id for c in contributions]
    if len(set(ids)) != len(ids):
        raise InvalidRequestError("the manifest names a client more than once", field=field)
    if len(ids) < min_clients:
        raise InvalidRequestError(
            f"the manifest names {len(ids)} clients; this federation accepts only sums of at least "
            f"{min_clients} (min_clients_per_edge)",
            code=ErrorCode.TOO_FEW_CLIENTS,
            field=field,
            detail={"count": len(ids), "min_clients_per_edge": min_clients},
        )
    for index, contribution in enumerate(contributions):
        cid = contribution.client_id
        where = f"{field}.{index}.client_id"
        info = clients.get(cid)
        if info is None:
            raise InvalidRequestError(
                f"client {cid!r} is not enrolled", code=ErrorCode.UNKNOWN_CLIENT, field=where
            )
        at_round = info.at_round(plan.round)
        if at_round.edge_id != edge_id:
            moving = (
                f" (its move to {at_round.moving_to!r} takes effect after round {at_round.moving_after_round})"
                if at_round.moving_to is not None
                else ""
            )
            raise InvalidRequestError(
                f"client {cid!r} is edge {at_round.edge_id!r}'s in round {plan.round}, not {edge_id!r}'s{moving}",
                code=ErrorCode.UNKNOWN_CLIENT,
                field=where,
                detail={"client_ids": [cid], "round": plan.round},
            )
        check_line_signature(
            contribution, info, federation_id=plan.federation_id, round_=plan.round, field=f"{field}.{index}"
        )
        planned_rank = plan.client_ranks.get(cid)
        if planned_rank is None:
            raise ForbiddenError(f"client {cid!r} is not in round {plan.round}'s plan", field=where)
        if max_weight is not None and contribution.weight > max_weight:
            raise InvalidRequestError(
                f"client {cid!r} weighs its delta by {contribution.weight}; with central DP a weight above "
                f"{max_weight:g} would make one client move the sum by more than the clip norm",
                field=f"{field}.{index}.weight",
            )
        share = plan.noise_share
        if share is not None and not math.isclose(
            contribution.noise_share_std or 0.0, share.std, rel_tol=1e-9
        ):
            # The ledger counts the shares the manifests declare: one the plan did not ask for would move it.
            raise InvalidRequestError(
                f"client {cid!r} declares a noise share of std {contribution.noise_share_std}; round "
                f"{plan.round}'s plan asks every client for {share.std:.6g}",
                field=f"{field}.{index}.noise_share_std",
            )
        if contribution.rank > planned_rank:
            raise InvalidRequestError(
                f"client {cid!r} reports rank {contribution.rank}, above its planned rank {planned_rank}",
                field=f"{field}.{index}.rank",
            )


def check_line_signature(
    contribution: Contribution, client: ClientInfo, *, federation_id: str, round_: int, field: str
) -> None:
    """Raise 400 `bad_contribution_signature` unless `contribution` is signed by `client`'s enrolled key for
    `round_` (the round it trained for); `detail` names the client, so an honest edge can forward without it."""
    payload = contribution.signing_payload(federation_id=federation_id, round_=round_)
    try:
        verify(client.public_key, payload, contribution.signature)
    except IdentityError as e:
        raise BadRequestError(
            f"the manifest line of client {client.client_id!r} for round {round_} is not signed by its enrolled "
            f"key: {e}",
            code=ErrorCode.BAD_CONTRIBUTION_SIGNATURE,
            field=f"{field}.signature",
            detail={"client_ids": [client.client_id], "round": round_},
        ) from e
