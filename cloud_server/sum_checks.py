"""The checks an edge's signed sum passes before the cloud takes it: made by `receive` on the wire and made
again by the close on each stored sum (`SumChecks.stored`), so that what the store holds is decrypted only
if it is what `receive` would have taken.

A neighbour that can write the cloud's store before a round is sealed can add a hash field to the round's
sums with its digest: a copy of another edge's sum, one hospital's upload, a sum of an edge that is not
enrolled. The close keys a sum by its hash field, so a sum whose header names another edge, whose edge is
not enrolled, whose signature is not its edge's, or whose manifest fails (fewer than `k` hospitals
included) is refused here and never decrypted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import ValidationError

from cloud_server.enrolment import EnrolmentService
from cloud_server.errors import ConflictError, NotFoundError, UnauthenticatedError
from cloud_server.federations import FederationService
from cloud_server.manifests import check_late, check_manifest
from cloud_server.plans import placed
from cloud_server.records import stored_edge_aggregate
from protocol.messages import ClientInfo, EdgeAggregate, ErrorCode, FederationSpec, RoundPlan
from services import keyspace
from services.errors import ForbiddenError, InvalidRequestError, ServiceError
from services.identity import IdentityError, verify
from services.store import StateStore
from services.stored_records import read_record

log = logging.getLogger("fedlora.cloud")


class SumChecks:
    """Receive's checks of an edge sum against the federation's edges, plans and hospitals."""

    def __init__(
        self, store: StateStore, federations: FederationService, enrolment: EnrolmentService
    ) -> None:
        self._store = store
        self._federations = federations
        self._enrolment = enrolment

    async def plan(self, fid: str, round_: int) -> RoundPlan:
        """Round `round_`'s stored plan; 404 if it has not opened."""
        plan = await read_record(self._store, keyspace.fed_round_plan(fid, round_), RoundPlan)
        if plan is None:
            await self._federations.spec(fid)
            raise NotFoundError(f"round {round_} of {fid!r} has not opened", field="round")
        return plan

    async def view(self, fid: str, plan: RoundPlan, edge_id: str) -> RoundPlan:
        """Edge `edge_id`'s view of the stored plan `plan` (unsigned): what it and its hospitals were served,
        so what their uploads and its sums name (`plan_sha256`)."""
        if plan.client_edges is None:  # opened before plans placed their hospitals
            plan = placed(plan, await self._enrolment.clients(fid, with_stats=False, round_=plan.round))
        return plan.view(edge_id)

    async def signed(self, fid: str, round_: int, agg: EdgeAggregate, *, edge_id: str) -> None:
        """Raise unless `agg` is for `fid`'s round `round_`, names `edge_id` (the edge whose token posted it,
        or the hash field it is stored under), and is signed by that edge's enrolled key (401 if the edge is
        not enrolled or the signature is not its)."""
        if agg.federation_id != fid:
            raise InvalidRequestError(
                f"body is for federation {agg.federation_id!r}, path for {fid!r}", field="federation_id"
            )
        if agg.round != round_:
            raise InvalidRequestError(
                f"body is for round {agg.round}, path for round {round_}", field="round"
            )
        if agg.edge_id != edge_id:
            raise ForbiddenError(
                f"the sum is taken as edge {edge_id!r}'s (its token; at the close, its hash field in the store); "
                f"the aggregate names {agg.edge_id!r}",
                field="edge_id",
            )
        edge = await self._enrolment.edge(fid, edge_id)
        if edge is None:
            raise UnauthenticatedError(f"edge {edge_id!r} is not enrolled in {fid!r}")
        try:
            verify(edge.public_key, agg.signing_payload(), agg.signature)
        except IdentityError as e:
            raise UnauthenticatedError(
                f"the aggregate's signature is not edge {edge_id!r}'s: {e}",
                code=ErrorCode.BAD_SIGNATURE,
                field="signature",
            ) from e

    async def made_under_plan(self, fid: str, agg: EdgeAggregate) -> RoundPlan:
        """Round `agg.round`'s stored plan; raise unless `agg` was made under its edge's view of it and in
        its basis."""
        plan = await self.plan(fid, agg.round)
        if agg.basis_version != plan.basis_version:
            raise ConflictError(
                f"basis_version {agg.basis_version}; round {agg.round} uses {plan.basis_version}",
                code=ErrorCode.WRONG_BASIS,
                field="basis_version",
            )
        self._check_plan_digest(
            agg.plan_sha256, await self.view(fid, plan, agg.edge_id), field="plan_sha256", edge_id=agg.edge_id
        )
        return plan

    async def manifests(self, fid: str, agg: EdgeAggregate, *, plan: RoundPlan, spec: FederationSpec) -> None:
        """Raise unless `agg`'s manifest (and each late bucket's) names at least `k` of its edge's hospitals
        in the plan, each line signed by its hospital (`check_manifest`, `check_late`)."""
        # As of this round: `check_contributions` reads each record at its sum's round, a late bucket's from
        # the edges the hospital had before (`ClientInfo.edges_before`).
        clients = await self._enrolment.clients(fid, with_stats=False, round_=agg.round)
        check_manifest(
            agg,
            plan=plan,
            clients=clients,
            min_clients=spec.min_clients_per_edge,
            max_weight=1.0 if spec.central_dp.noisy else None,
        )
        if agg.late:
            await self._check_late(fid, agg, spec=spec, clients=clients)

    async def stored(self, fid: str, round_: int, field: str, value: bytes) -> str | None:
        """Why the sum `value`, stored under hash field `field` of round `round_`'s sums, is not one `receive`
        would have taken from edge `field` (None: it is): the same checks, its edge's signature included."""
        try:
            agg = stored_edge_aggregate(value, federation_id=fid)
        except (ValueError, ValidationError) as e:
            return f"it does not read back as an edge aggregate: {e}"
        spec = await self._federations.spec(fid)
        try:
            await self.signed(fid, round_, agg, edge_id=field)
            plan = await self.made_under_plan(fid, agg)
            await self.manifests(fid, agg, plan=plan, spec=spec)
        except ServiceError as e:
            return f"{e.code.value}: {e.message}" + (f" (field {e.field})" if e.field else "")
        return None

    @staticmethod
    def _check_plan_digest(digest: str | None, plan: RoundPlan, *, field: str, edge_id: str) -> None:
        """Refuse a sum made under another plan than the edge's view of the one stored for its round
        (`plan`): its hospitals, or the edge, were served a plan this cloud did not publish for them all."""
        if digest == plan.sha256:
            return
        log.error(
            "an edge aggregate was made under another plan than its view of the stored one",
            extra={
                "round": plan.round,
                "edge_id": edge_id,
                "code": ErrorCode.PLAN_MISMATCH.value,
                "data": {"field": field, "plan_sha256": digest, "stored": plan.sha256},
            },
        )
        raise ConflictError(
            f"{field} is {digest}; round {plan.round}'s plan, as edge {edge_id!r} was served it, has digest "
            f"{plan.sha256}",
            code=ErrorCode.PLAN_MISMATCH,
            field=field,
        )

    async def _check_late(
        self, fid: str, agg: EdgeAggregate, *, spec: FederationSpec, clients: Mapping[str, ClientInfo]
    ) -> None:
        """Late buckets: allowed, not too late, each manifest valid against its own round's plan and basis
        (that no client counts twice for one round is claimed with the aggregate, in `_store_once`)."""
        late = spec.late_uploads
        plans = {}
        for bucket in agg.late:
            if late is not None and agg.round - bucket.origin_round <= late.max_staleness:
                plans[bucket.origin_round] = await self.plan(fid, bucket.origin_round)
        check_late(
            agg,
            plans=plans,
            clients=clients,
            min_clients=spec.min_clients_per_edge,
            max_staleness=late.max_staleness if late is not None else None,
            max_weight=1.0 if spec.central_dp.noisy else None,
        )
        for index, bucket in enumerate(agg.late):
            self._check_plan_digest(
                bucket.plan_sha256,
                await self.view(fid, plans[bucket.origin_round], agg.edge_id),
                field=f"late.{index}.plan_sha256",
                edge_id=agg.edge_id,
            )
            if plans[bucket.origin_round].basis_version != agg.basis_version:
                raise ConflictError(
                    f"round {bucket.origin_round} used basis version {plans[bucket.origin_round].basis_version}, "
                    f"round {agg.round} uses {agg.basis_version}: its late uploads cannot be added",
                    code=ErrorCode.WRONG_BASIS,
                    field=f"late.{index}.origin_round",
                )
