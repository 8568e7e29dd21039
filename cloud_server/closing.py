"""Closing a round: sum the edges' aggregates, decrypt the total, store the next adapter and plan, once.

A round is closed by one store transaction that writes the new adapter, the closed status, the clients'
stats, the next plan and the federation record together, and only if the round is still open: two closers
(two requests, a request and the deadline check, or a restarted cloud) commit once. A lease (`SET NX` with
a TTL) keeps a second closer from redoing the decryption while the first works; if the first dies, the
lease lapses and the next deadline check finishes the round from the stored aggregates. The central noise
comes from a seed written once per round (sealed under the KEK), so whichever closer commits, the global
update is the same one: a crash never produces two differently-noised views of the same sum.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime

import numpy as np

from cloud_server.central_ledger import Ledger, entry_for
from cloud_server.convergence import converged, round_validation_loss
from cloud_server.enrolment import EnrolmentService
from cloud_server.errors import NotFoundError
from cloud_server.federations import FederationService, vector_bytes, vector_from_bytes, vector_sha256
from cloud_server.plans import PlanBoard, ended, open_round, signed
from cloud_server.privacy_budget import overspend, settle_round, stop_reason
from cloud_server.records import (
    FINAL_ROUND_STATES,
    ClientStats,
    FederationRecord,
    StoredAggregate,
    unpack_aggregate,
    unpack_late,
    unpack_mask_correction,
)
from cloud_server.telemetry import CloudTelemetry
from protocol.aggregation import Aggregated, LateGroup, RoundNoise, aggregate, round_noise
from protocol.crypto import CryptoError, KeyStoreError
from protocol.ffa import basis_bytes, basis_sha256, column_energy, grown_ranks, rebase_adapter, seeded_bases
from protocol.messages import (
    AdapterVersion,
    Contribution,
    EdgeProgress,
    FederationSpec,
    FederationState,
    RebaseSummary,
    RoundPlan,
    RoundState,
    RoundStatus,
    schedule_multiplier,
    shares_for,
)
from protocol.strategies import strategy_for
from services import keyspace
from services.store import StateStore, Updates

log = logging.getLogger("fedlora.cloud")


def with_progress(status: RoundStatus, forwarded: Mapping[str, StoredAggregate]) -> RoundStatus:
    """`status` with each edge's forwarded aggregate counted in, and when the cloud accepted it."""
    edges = {e.edge_id: e for e in status.edges}
    for edge_id, header in forwarded.items():
        base = edges.get(edge_id) or EdgeProgress(edge_id=edge_id, expected_clients=0, uploads_accepted=0)
        edges[edge_id] = base.model_copy(
            update={
                "uploads_accepted": header.count,
                "forwarded": True,
                "bytes_received": header.ciphertext_bytes,
                "late_accepted": header.late_count,
                "forwarded_at": header.received_at,
            }
        )
    return status.model_copy(
        update={
            "edges": tuple(edges[k] for k in sorted(edges)),
            "clients_contributed": sum(h.count for h in forwarded.values()),
            "total_weight": sum(h.total_weight for h in forwarded.values()),
        }
    )


def late_groups(spec: FederationSpec, round_: int, values: Mapping[str, bytes]) -> list[LateGroup]:
    """The late buckets of a round's stored aggregates, grouped by staleness (least late first)."""
    if spec.late_uploads is None:
        return []
    by_staleness: dict[int, tuple[list[memoryview], list[Contribution]]] = {}
    for edge_id in sorted(values):
        for bucket, ciphertext in unpack_late(values[edge_id]):
            parts, contributions = by_staleness.setdefault(round_ - bucket.origin_round, ([], []))
            parts.append(ciphertext)
            contributions.extend(bucket.contributions)
    return [
        LateGroup(s, spec.late_uploads.factor(s), parts, contributions)
        for s, (parts, contributions) in sorted(by_staleness.items())
    ]


class RoundCloser:
    def __init__(
        self,
        store: StateStore,
        federations: FederationService,
        enrolment: EnrolmentService,
        board: PlanBoard,
        *,
        telemetry: CloudTelemetry,
    ) -> None:
        self._telemetry = telemetry
        self._store = store
        self._federations = federations
        self._enrolment = enrolment
        self._board = board

    async def _is_over(self, fid: str, round_: int) -> bool:
        raw = await self._store.get(keyspace.fed_round_status(fid, round_))
        return raw is None or RoundStatus.model_validate_json(raw).state in FINAL_ROUND_STATES

    async def close(
        self, fid: str, round_: int, now: datetime, values: Mapping[str, bytes], *, why: str
    ) -> None:
        """Close `round_` with the stored aggregates `values` (edge id -> stored value), unless another
        closer holds the lease or already closed it."""
        lease = keyspace.fed_round_closing(fid, round_)
        if not await self._store.set_if_absent(
            lease, now.isoformat().encode(), ttl_s=keyspace.ROUND_CLOSE_LEASE_TTL_S
        ):
            return  # another closer is at work
        try:
            spec = await self._federations.spec(fid)
            record = await self._federations.record(fid)
            if record.current_round != round_ or await self._is_over(fid, round_):
                return  # closed by someone else between our look and the lease
            unpacked = [unpack_aggregate(values[edge_id]) for edge_id in sorted(values)]
            headers = {header.edge_id: header for header, _ in unpacked}
            layout, _ = await self._federations.layout(fid)
            previous_raw = await self._store.get(keyspace.fed_adapter(fid, record.adapter_version))
            if previous_raw is None:
                raise NotFoundError(
                    f"adapter version {record.adapter_version} of {fid!r} is missing from the store"
                )
            previous = vector_from_bytes(previous_raw, layout.size)
            plan = RoundPlan.model_validate_json(
                await self._store.get(keyspace.fed_round_plan(fid, round_)) or b""
            )
            contributions = [c for header in headers.values() for c in header.contributions]
            late = late_groups(spec, round_, values)
            noise = round_noise(
                spec,
                multiplier=schedule_multiplier(
                    spec.central_dp, round_index=record.rounds_closed, rounds=spec.rounds
                ),
                contributions=contributions,
                late=late,
                layout_size=layout.size,
                shares_planned=plan.noise_share.clients if plan.noise_share is not None else None,
                sums=[header.contributions for header in headers.values()],
            )
            # The budget is a cap: a round whose release would pass it is never decrypted.
            over = None
            if spec.central_dp.epsilon_budget is not None:
                raw_ledger = await self._store.get(keyspace.fed_privacy(fid))
                ledger = Ledger.model_validate_json(raw_ledger) if raw_ledger else Ledger()
                over = overspend(spec, ledger, round_=round_, noise=noise, layout_size=layout.size)
            if over is not None:
                await self.fail(fid, round_, now, reason=over, forwarded=headers, exhausted=True, held=noise)
                return
            # A wrong KEK raises `KeyStoreError` here: not the round's fault, so it is not failed for it.
            scheme = await self._federations.secret_scheme(fid)
            seed = await self._federations.noise_seed(fid, round_)
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(
                    aggregate,
                    scheme,
                    [ciphertext for _, ciphertext in unpacked],
                    global_vector=previous,
                    contributions=contributions,
                    layout=layout,
                    strategy=strategy_for(spec),
                    noise=noise,
                    rows=[(h.edge_id, h.total_weight) for h, _ in unpacked],
                    rng=np.random.default_rng(seed),
                    k=spec.min_clients_per_edge,
                    late=late,
                    corrections=[unpack_mask_correction(values[edge_id]) for edge_id in sorted(values)],
                )
            except KeyStoreError:
                raise
            except CryptoError as e:
                reason = f"the sum of {len(headers)} edge aggregates did not decrypt: {e}"
                await self.fail(fid, round_, now, reason=reason, forwarded=headers, held=noise)
                return
            self._telemetry.decrypted(scheme.kind.value, result.decrypt_s)
            metrics = {
                "aggregation_s": time.perf_counter() - started,
                "edges_forwarded": float(len(headers)),
                "noise_multiplier": noise.multiplier,
                "noise_std": result.noise_std,
                "realised_noise_multiplier": noise.realised_multiplier,
                "sensitivity": noise.sensitivity,
            }
            if late:
                metrics["late_contributions"] = float(sum(len(g.contributions) for g in late))
            if result.held_back:
                metrics["held_back_values"] = float(result.held_back)
            if result.flagged:
                metrics["edges_flagged"] = float(len(result.flagged))
                log.warning(
                    "edges flagged as contaminated; their sums were left out",
                    extra={"federation_id": fid, "round": round_, "data": {"edges": list(result.flagged)}},
                )
            await self._commit(
                fid,
                round_,
                now,
                record,
                headers,
                result,
                noise,
                metrics,
                update=result.vector.astype(np.float64) - previous,
                why=why,
                late=late,
            )
        finally:
            await self._store.delete(lease)

    async def _commit(
        self,
        fid: str,
        round_: int,
        now: datetime,
        seen: FederationRecord,
        headers: Mapping[str, StoredAggregate],
        result: Aggregated,
        noise: RoundNoise,
        metrics: dict[str, float],
        *,
        update: np.ndarray,
        why: str,
        late: list[LateGroup],
    ) -> None:
        spec = await self._federations.spec(fid)
        layout, in_features = await self._federations.layout(fid)
        clients = await self._enrolment.clients(fid, with_stats=False)
        v_in, v_out = seen.adapter_version, seen.adapter_version + 1
        signer = await self._federations.plan_signer(fid)
        basis_digest = await self._federations.basis_sha256(fid, seen.basis(spec))
        out_bytes = vector_bytes(result.vector)
        # Seed 001's third stage happens once, at the first convergence, from the seeded basis.
        rebase_rank = spec.rank_policy.rebase_rank if seen.basis_version is None else None
        basis_next = spec.basis_version + 1
        bases = (
            seeded_bases(layout, in_features, seed=spec.seed, basis_version=spec.basis_version)
            if rebase_rank is not None
            else None
        )
        rebase_keys = (
            [
                keyspace.fed_basis(fid, basis_next),
                keyspace.fed_adapter(fid, v_out + 1),
                keyspace.fed_adapter_meta(fid, v_out + 1),
            ]
            if rebase_rank is not None
            else []
        )
        completes = seen.rounds_closed + 1 >= spec.rounds
        fresh = [c for header in headers.values() for c in header.contributions]
        # Late ones first, so that a hospital's fresh upload (its newest accountant history) wins below.
        contributions = [*(c for group in late for c in group.weighted()), *fresh]
        total_weight = float(sum(c.weight for c in contributions))
        late_count = sum(len(group.contributions) for group in late)
        record_key, status_key = keyspace.fed_state(fid), keyspace.fed_round_status(fid, round_)
        next_keys = [keyspace.fed_round_plan(fid, round_ + 1), keyspace.fed_round_status(fid, round_ + 1)]
        stats_keys = {c.client_id: keyspace.fed_client_stats(fid, c.client_id) for c in contributions}
        seed_key = keyspace.fed_round_noise_seed(fid, round_)
        ledger_key = keyspace.fed_privacy(fid)
        validation_key = keyspace.fed_validation(fid)
        ranks_key = keyspace.fed_ranks(fid)
        growth = spec.rank_policy.grow_energy
        energy = column_energy(layout, update) if growth else None
        round_loss = round_validation_loss(fresh)
        if round_loss is not None:
            metrics["validation_loss"] = round_loss
        keys = [
            record_key,
            status_key,
            seed_key,
            ledger_key,
            validation_key,
            ranks_key,
            keyspace.fed_adapter(fid, v_out),
            keyspace.fed_adapter_meta(fid, v_out),
            *([] if completes else next_keys),
            *rebase_keys,
            *stats_keys.values(),
        ]

        def commit(current: dict[str, bytes | None]) -> Updates:
            record = FederationRecord.model_validate_json(current[record_key] or b"")
            status = RoundStatus.model_validate_json(current[status_key] or b"")
            if (
                status.state in FINAL_ROUND_STATES
                or record.ended
                or record.current_round != round_
                or record.adapter_version != v_in
            ):
                return {}  # someone else closed it
            closed = ended(with_progress(status, headers), RoundState.CLOSED, now).model_copy(
                update={
                    "adapter_version_out": v_out,
                    "update_norm": result.update_norm,
                    "flagged": result.flagged,
                    "metrics": metrics,
                    "late_contributions": late_count,
                    "total_weight": total_weight,
                    "published_rank": result.published_rank,
                }
            )
            version = AdapterVersion(
                federation_id=fid, version=v_out, round=round_, update_norm=result.update_norm, created_at=now
            )
            updates: dict[str, bytes | None] = {
                status_key: closed.model_dump_json().encode(),
                seed_key: None,  # the noise is in the adapter now; nobody needs its seed again
                keyspace.fed_adapter(fid, v_out): out_bytes,
                keyspace.fed_adapter_meta(fid, v_out): version.model_dump_json().encode(),
            }
            for c in contributions:  # a hospital in time and late counts both updates
                key = stats_keys[c.client_id]
                raw = updates.get(key) or current[key]
                old = ClientStats.model_validate_json(raw) if raw else ClientStats()
                epsilon = c.local_epsilon if c.local_epsilon is not None else old.local_epsilon
                updates[key] = ClientStats(
                    rounds_contributed=old.rounds_contributed + 1, last_seen=now, local_epsilon=epsilon
                ).dump()
            raw_ledger = current[ledger_key]
            settled = settle_round(
                spec,
                Ledger.model_validate_json(raw_ledger) if raw_ledger else Ledger(),
                round_=round_,
                noise=noise,
                contributions=contributions,
                total_weight=total_weight,
                layout_size=layout.size,
                rounds_closed_after=record.rounds_closed + 1,
                shares_planned_next=shares_for(spec.central_dp, len(clients)) if clients else None,
            )
            updates[ledger_key] = settled.ledger.dump()
            exhausted = stop_reason(spec, settled, rounds_closed=record.rounds_closed + 1)
            changes: dict[str, object] = {"adapter_version": v_out, "rounds_closed": record.rounds_closed + 1}
            history = json.loads(current[validation_key] or b"[]")
            if round_loss is not None:
                history.append([round_, round_loss])
                updates[validation_key] = json.dumps(history).encode()
            converging = converged(history, spec.convergence) if spec.convergence is not None else None
            rebased: RebaseSummary | None = None
            if completes:
                changes |= {"state": FederationState.COMPLETED, "reason": f"all {spec.rounds} rounds closed"}
            elif exhausted is not None:
                # Before re-basing: a re-based round is a round too, and one past the budget is not planned.
                changes |= {"state": FederationState.BUDGET_EXHAUSTED, "reason": exhausted}
            elif converging is not None and rebase_rank is not None and bases is not None:
                new = rebase_adapter(layout, result.vector, bases, rank=rebase_rank)
                v_new = v_out + 1
                rebased = RebaseSummary(
                    basis_version=basis_next,
                    adapter_version=v_new,
                    rank=rebase_rank,
                    truncation_error=new.truncation_error,
                    kept_energy=new.kept_energy,
                )
                new_basis, new_vector = basis_bytes(layout, new.bases), vector_bytes(new.vector)
                updates[rebase_keys[0]] = new_basis
                updates[rebase_keys[1]] = new_vector
                updates[rebase_keys[2]] = (
                    AdapterVersion(
                        federation_id=fid,
                        version=v_new,
                        round=round_,
                        update_norm=float(np.linalg.norm(new.vector.astype(np.float64) - result.vector)),
                        created_at=now,
                        basis_version=basis_next,
                    )
                    .model_dump_json()
                    .encode()
                )
                ranks = {cid: min(rebase_rank, info.max_rank or spec.r_max) for cid, info in clients.items()}
                stored = json.loads(current[ranks_key] or b"{}")
                updates[ranks_key] = json.dumps(stored | ranks, sort_keys=True).encode()
                updates[validation_key] = b"[]"  # the loss must settle again in the new basis
                plan, opened = open_round(
                    spec,
                    round_=round_ + 1,
                    adapter_version=v_new,
                    layout_digest=record.layout_digest,
                    clients={cid: i.model_copy(update={"rank": ranks[cid]}) for cid, i in clients.items()},
                    now=now,
                    rounds_closed=record.rounds_closed + 1,
                    basis_version=basis_next,
                    vector_sha256=vector_sha256(new_vector),
                    basis_sha256=basis_sha256(layout, new.bases),
                )
                updates[next_keys[0]] = signed(plan, signer).model_dump_json().encode()
                updates[next_keys[1]] = opened.model_dump_json().encode()
                changes |= {
                    "adapter_version": v_new,
                    "basis_version": basis_next,
                    "current_round": round_ + 1,
                }
                updates[status_key] = (
                    closed.model_copy(update={"rebased": rebased}).model_dump_json().encode()
                )
                outcome["rebased"] = rebased
            elif converging is not None:
                changes |= {"state": FederationState.COMPLETED, "reason": converging}
            else:
                planned = clients
                if growth is not None and energy is not None:
                    ranks = {cid: info.rank for cid, info in clients.items()}
                    caps = {cid: info.max_rank or spec.r_max for cid, info in clients.items()}
                    grown = grown_ranks(ranks, caps, energy=energy, threshold=growth)
                    if grown != ranks:
                        stored = json.loads(current[ranks_key] or b"{}")
                        updates[ranks_key] = json.dumps(stored | grown, sort_keys=True).encode()
                        planned = {
                            cid: i.model_copy(update={"rank": grown[cid]}) for cid, i in clients.items()
                        }
                        outcome["grown"] = {cid: r for cid, r in grown.items() if r != ranks[cid]}
                plan, opened = open_round(
                    spec,
                    round_=round_ + 1,
                    adapter_version=v_out,
                    layout_digest=record.layout_digest,
                    clients=planned,
                    now=now,
                    rounds_closed=record.rounds_closed + 1,
                    basis_version=record.basis(spec),
                    vector_sha256=vector_sha256(out_bytes),
                    basis_sha256=basis_digest,
                )
                updates[next_keys[0]] = signed(plan, signer).model_dump_json().encode()
                updates[next_keys[1]] = opened.model_dump_json().encode()
                changes["current_round"] = round_ + 1
            updates[record_key] = record.model_copy(update=changes).dump()
            if "state" in changes:  # the federation ends with this round: say why on the round too
                updates[status_key] = (
                    closed.model_copy(update={"stop_reason": changes["reason"]}).model_dump_json().encode()
                )
            outcome["epsilon"], outcome["reason"] = settled.epsilon, changes.get("reason")
            outcome["exhausted"] = changes.get("state") is FederationState.BUDGET_EXHAUSTED
            return updates

        outcome: dict[str, object] = {}
        if not await self._store.transaction(keys, commit):
            return
        self._board.publish(fid)
        await self._telemetry.round_ended(fid, round_)
        if outcome.get("grown"):
            log.info("ranks grown", extra={"federation_id": fid, "round": round_, "data": outcome["grown"]})
        if isinstance(summary := outcome.get("rebased"), RebaseSummary):
            log.info(
                "validation loss settled: adapter re-based to a common rank",
                extra={"federation_id": fid, "round": round_, "data": summary.model_dump()},
            )
        if outcome.get("exhausted"):
            log.warning(
                "privacy budget exhausted: federation stopped: %s",
                outcome["reason"],
                extra={"federation_id": fid, "round": round_},
            )
        log.info(
            "round closed (%s)",
            why,
            extra={
                "federation_id": fid,
                "round": round_,
                "data": {
                    "adapter_version": v_out,
                    "clients": len(contributions),
                    "completed": completes,
                    "central_epsilon": outcome.get("epsilon"),
                    **metrics,
                },
            },
        )

    async def fail(
        self,
        fid: str,
        round_: int,
        now: datetime,
        *,
        reason: str,
        forwarded: Mapping[str, StoredAggregate] | None = None,
        exhausted: bool = False,
        held: RoundNoise | None = None,
    ) -> None:
        """Mark `round_` failed and open the next round from the same adapter, unless it is already over;
        `exhausted`: the round would have passed the privacy budget, so the federation ends instead
        (`budget_exhausted`, with `reason` on the record and the round), in the same transaction. `held`:
        the noise on the edge sums the cloud received; with distributed noise the ledger charges them to the
        column against the decrypting cloud (it can decrypt them, released or not)."""
        spec = await self._federations.spec(fid)
        clients = await self._enrolment.clients(fid, with_stats=False)
        record_key, status_key = keyspace.fed_state(fid), keyspace.fed_round_status(fid, round_)
        next_keys = [keyspace.fed_round_plan(fid, round_ + 1), keyspace.fed_round_status(fid, round_ + 1)]
        ledger_key = keyspace.fed_privacy(fid)
        seen = await self._federations.record(fid)
        signer = await self._federations.plan_signer(fid)
        vector_digest = await self._federations.adapter_sha256(fid, seen.adapter_version)
        basis_digest = await self._federations.basis_sha256(fid, seen.basis(spec))

        def commit(current: dict[str, bytes | None]) -> Updates:
            record = FederationRecord.model_validate_json(current[record_key] or b"")
            status = RoundStatus.model_validate_json(current[status_key] or b"")
            if status.state in FINAL_ROUND_STATES or record.ended or record.current_round != round_:
                return {}
            if (record.adapter_version, record.basis(spec)) != (seen.adapter_version, seen.basis(spec)):
                return {}  # the round was closed meanwhile (closing moves the adapter on)
            failed = ended(with_progress(status, forwarded or {}), RoundState.FAILED, now).model_copy(
                update={"failure": reason[:2000]}
            )
            charged: dict[str, bytes | None] = {}
            if held is not None and held.distributed:
                raw = current[ledger_key]
                ledger = Ledger.model_validate_json(raw) if raw else Ledger()
                entry = entry_for(round_, held, [], 0.0).model_copy(update={"released": False})
                charged[ledger_key] = Ledger(rounds=(*ledger.rounds, entry)).dump()
            if exhausted:
                stop = {"state": FederationState.BUDGET_EXHAUSTED, "reason": reason[:2000]}
                return charged | {
                    status_key: failed.model_copy(update={"stop_reason": reason[:2000]})
                    .model_dump_json()
                    .encode(),
                    record_key: record.model_copy(update=stop).dump(),
                }
            # The next round reopens from the same adapter, so the federation does not stall.
            plan, opened = open_round(
                spec,
                round_=round_ + 1,
                adapter_version=record.adapter_version,
                layout_digest=record.layout_digest,
                clients=clients,
                now=now,
                rounds_closed=record.rounds_closed,
                basis_version=record.basis(spec),
                vector_sha256=vector_digest,
                basis_sha256=basis_digest,
            )
            return charged | {
                status_key: failed.model_dump_json().encode(),
                next_keys[0]: signed(plan, signer).model_dump_json().encode(),
                next_keys[1]: opened.model_dump_json().encode(),
                record_key: record.model_copy(update={"current_round": round_ + 1}).dump(),
            }

        if await self._store.transaction([record_key, status_key, ledger_key, *next_keys], commit):
            self._board.publish(fid)
            await self._telemetry.round_ended(fid, round_)
            what = "privacy budget exhausted: federation stopped" if exhausted else "round failed"
            log.warning("%s: %s", what, reason, extra={"federation_id": fid, "round": round_})
