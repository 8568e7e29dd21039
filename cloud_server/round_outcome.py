"""What a closing round publishes, decided from plain values: no store, no clock, no I/O.

`closing` decrypts a round, reads the keys its commit touches in one store transaction, checks the round is
still its own and hands `round_outcome` what it read (`Stored`) and what it decrypted (`Release`). The
`RoundOutcome` that comes back says everything the commit writes: the closed status, the new adapter
version, the clients' stats, the ledger, the validation history, the ranks and the next round's plan, or why
the federation ends there. A function that decides and a function that writes are two functions (STYLE 11),
so every branch of the decision (completed, budget exhausted, re-based at convergence, converged, ranks
grown, next round) is tested without a store (tests/cloud/test_round_outcome.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property

import numpy as np

from cloud_server.central_ledger import Ledger
from cloud_server.convergence import converged, round_validation_loss
from cloud_server.federations import vector_bytes, vector_sha256
from cloud_server.plans import ended, open_round, with_progress
from cloud_server.privacy_budget import settle_round, stop_reason
from cloud_server.records import FINAL_ROUND_STATES, ClientStats, FederationRecord, StoredAggregate
from protocol.aggregation import Aggregated, LateGroup, RoundNoise
from protocol.ffa import AdapterLayout, basis_bytes, basis_sha256, grown_ranks, rebase_adapter
from protocol.messages import (
    AdapterVersion,
    ClientInfo,
    Contribution,
    DropReason,
    FederationSpec,
    FederationState,
    RebaseSummary,
    RoundPlan,
    RoundState,
    RoundStatus,
    shares_for,
)

History = tuple[tuple[int, float], ...]  # (round, validation loss), oldest first


@dataclass(frozen=True)
class Release:
    """A decrypted round and what the closer read before its commit (none of it read again in the commit)."""

    spec: FederationSpec
    round: int
    now: datetime
    seen: FederationRecord  # the record before decrypting: the adapter version the round builds on
    headers: Mapping[str, StoredAggregate]  # the edges' aggregates, by edge id
    late: Sequence[LateGroup]  # the late buckets folded in, by staleness
    result: Aggregated
    noise: RoundNoise
    metrics: Mapping[str, float]  # what the decryption measured, without the validation loss
    layout: AdapterLayout
    clients: Mapping[str, ClientInfo]  # the enrolled clients the next round asks to join
    basis_sha256: str  # the digest of the basis the round trained on
    bases: Mapping[str, np.ndarray] | None  # the seeded basis, while the federation may still re-base
    energy: np.ndarray | None  # each LoRA column's share of the update, when ranks may grow
    # The aggregates the round holds whose sums are out of range or did not unmask, left out of `headers`
    # and of the model, with why (`DropReason.OUT_OF_RANGE`, `DropReason.MASKING_FAILED`).
    refused: Mapping[str, tuple[DropReason, StoredAggregate]] = field(default_factory=dict)

    @property
    def version_out(self) -> int:
        return self.seen.adapter_version + 1

    @property
    def completes(self) -> bool:
        return self.seen.rounds_closed + 1 >= self.spec.rounds

    @property
    def rebase_rank(self) -> int | None:
        """Seed 001's third stage happens once, at the first convergence, from the seeded basis."""
        return self.spec.rank_policy.rebase_rank if self.seen.basis_version is None else None

    @cached_property
    def fresh(self) -> list[Contribution]:
        return [c for header in self.headers.values() for c in header.contributions]

    @cached_property
    def contributions(self) -> list[Contribution]:
        """Late ones first, so that a hospital's fresh upload (its newest accountant history) wins in its
        stats."""
        return [*(c for group in self.late for c in group.weighted()), *self.fresh]

    @property
    def total_weight(self) -> float:
        return float(sum(c.weight for c in self.contributions))

    @property
    def late_count(self) -> int:
        return sum(len(group.contributions) for group in self.late)

    @property
    def dropped(self) -> dict[DropReason, int]:
        """Uploads in the aggregates the round holds that its model leaves out, by reason."""
        flagged = sum(
            h.count + h.late_count for e, h in self.headers.items() if e in set(self.result.flagged)
        )
        counts = {
            DropReason.LATE_LEFT_OUT: int(self.metrics.get("late_left_out", 0)),
            DropReason.FLAGGED: flagged,
        }
        for reason, header in self.refused.values():
            counts[reason] = counts.get(reason, 0) + header.count + header.late_count
        return {reason: n for reason, n in counts.items() if n > 0}

    @cached_property
    def metrics_out(self) -> dict[str, float]:
        """The round's metrics as its status records them: the decryption's, and the validation loss."""
        loss = round_validation_loss(self.fresh)
        return {**self.metrics, **({"validation_loss": loss} if loss is not None else {})}


@dataclass(frozen=True)
class Stored:
    """What the commit read of the keys it writes, parsed (a missing key: its empty value)."""

    record: FederationRecord
    status: RoundStatus
    ledger: Ledger
    validation: History
    ranks: Mapping[str, int]  # the ranks the cloud set (grown or re-based), by client id
    stats: Mapping[str, ClientStats]  # of the round's contributors that have any


@dataclass(frozen=True)
class NextRound:
    plan: RoundPlan  # unsigned: the writer signs it
    status: RoundStatus


@dataclass(frozen=True)
class Rebase:
    """The adapter re-expressed at the common rank in a new basis, published as the version after the
    round's own."""

    summary: RebaseSummary
    basis: bytes
    vector: bytes
    version: AdapterVersion


@dataclass(frozen=True)
class RoundOutcome:
    """Everything a closed round writes. `validation` and `ranks` are None where they stay as stored."""

    status: RoundStatus
    version: AdapterVersion
    vector: bytes
    stats: Mapping[str, ClientStats]
    ledger: Ledger
    epsilon: float | None  # the public epsilon after the round; None without central noise
    record: FederationRecord
    validation: History | None = None
    ranks: Mapping[str, int] | None = None
    next_round: NextRound | None = None
    rebase: Rebase | None = None
    grown: Mapping[str, int] | None = None  # the clients whose rank grew, to their new rank

    @property
    def stop_reason(self) -> str | None:
        """Why the federation ends with this round; None when it goes on."""
        return self.status.stop_reason

    @property
    def exhausted(self) -> bool:
        return self.record.state is FederationState.BUDGET_EXHAUSTED


def still_open(release: Release, record: FederationRecord, status: RoundStatus) -> bool:
    """Whether the round is still the one `release` was decrypted for: open, current, on the same adapter
    (another closer that committed first moved the adapter on)."""
    return not (
        status.state in FINAL_ROUND_STATES
        or record.ended
        or record.current_round != release.round
        or record.adapter_version != release.seen.adapter_version
    )


def round_outcome(release: Release, stored: Stored) -> RoundOutcome:
    """What closing `release` over the state `stored` writes (the round must be `still_open`)."""
    spec, record, now = release.spec, stored.record, release.now
    settled = settle_round(
        spec,
        stored.ledger,
        round_=release.round,
        noise=release.noise,
        contributions=release.contributions,
        total_weight=release.total_weight,
        column_noise_std=release.result.column_noise_std or None,
        layout_size=release.layout.size,
        rounds_closed_after=record.rounds_closed + 1,
        shares_planned_next=shares_for(spec.central_dp, len(release.clients)) if release.clients else None,
    )
    loss = release.metrics_out.get("validation_loss")
    history = (*stored.validation, (release.round, loss)) if loss is not None else stored.validation
    outcome = RoundOutcome(
        status=closed_status(release, stored.status),
        version=AdapterVersion(
            federation_id=spec.federation_id,
            version=release.version_out,
            round=release.round,
            update_norm=release.result.update_norm,
            created_at=now,
            basis_version=record.basis(spec),  # the basis the round's plan trained in
        ),
        vector=vector_bytes(release.result.vector),
        stats=client_stats(release.contributions, stored.stats, now=now),
        ledger=settled.ledger,
        epsilon=settled.epsilon,
        record=record.model_copy(
            update={"adapter_version": release.version_out, "rounds_closed": record.rounds_closed + 1}
        ),
        validation=history if loss is not None else None,
    )
    exhausted = stop_reason(spec, settled, rounds_closed=record.rounds_closed + 1)
    converging = converged(history, spec.convergence) if spec.convergence is not None else None
    if release.completes:
        return ends(outcome, FederationState.COMPLETED, f"all {spec.rounds} rounds closed")
    if exhausted is not None:
        # Before re-basing: a re-based round is a round too, and one past the budget is not planned.
        return ends(outcome, FederationState.BUDGET_EXHAUSTED, exhausted)
    if converging is not None and release.rebase_rank is not None and release.bases is not None:
        return rebased(release, stored, outcome, rank=release.rebase_rank, bases=release.bases)
    if converging is not None:
        return ends(outcome, FederationState.COMPLETED, converging)
    return goes_on(release, stored, outcome)


def closed_status(release: Release, status: RoundStatus) -> RoundStatus:
    """The round's status closed at `release.now`, with what its release published."""
    result = release.result
    # Every aggregate the round holds shows as forwarded, those left out too (`uploads_dropped` says why).
    forwarded = {**release.headers, **{edge: header for edge, (_, header) in release.refused.items()}}
    return ended(with_progress(status, forwarded), RoundState.CLOSED, release.now).model_copy(
        update={
            "adapter_version_out": release.version_out,
            "update_norm": result.update_norm,
            "flagged": result.flagged,
            "metrics": release.metrics_out,
            "late_contributions": release.late_count,
            "total_weight": release.total_weight,
            "clients_contributed": sum(h.count for h in release.headers.values()),
            "published_rank": result.published_rank,
            "column_noise_std": result.column_noise_std or None,
            "uploads_dropped": release.dropped,
        }
    )


def client_stats(
    contributions: Sequence[Contribution], before: Mapping[str, ClientStats], *, now: datetime
) -> dict[str, ClientStats]:
    """Each contributor's stats after the round: a hospital in time and late counts both updates, and keeps
    the local epsilon of the last contribution that reports one."""
    after: dict[str, ClientStats] = {}
    for c in contributions:
        old = after[c.client_id] if c.client_id in after else before.get(c.client_id, ClientStats())
        epsilon = c.local_epsilon if c.local_epsilon is not None else old.local_epsilon
        after[c.client_id] = ClientStats(
            rounds_contributed=old.rounds_contributed + 1, last_seen=now, local_epsilon=epsilon
        )
    return after


def ends(outcome: RoundOutcome, state: FederationState, reason: str) -> RoundOutcome:
    """`outcome` for a federation that ends with the round, in `state`: said on the record and the round."""
    return replace(
        outcome,
        record=outcome.record.model_copy(update={"state": state, "reason": reason}),
        status=outcome.status.model_copy(update={"stop_reason": reason}),
    )


def rebased(
    release: Release,
    stored: Stored,
    outcome: RoundOutcome,
    *,
    rank: int,
    bases: Mapping[str, np.ndarray],
) -> RoundOutcome:
    """`outcome` when the validation loss settled first: the adapter re-based to the common `rank` in a new
    basis (one more adapter version), every client capped at it, and the next round planned on both."""
    spec = release.spec
    rebase, new_bases = rebase_of(release, rank=rank, bases=bases)
    basis_next, version_next = rebase.summary.basis_version, rebase.summary.adapter_version
    ranks = {cid: min(rank, info.max_rank or spec.r_max) for cid, info in release.clients.items()}
    clients = {cid: info.model_copy(update={"rank": ranks[cid]}) for cid, info in release.clients.items()}
    next_round = next_round_for(
        release,
        stored.record,
        clients=clients,
        adapter_version=version_next,
        basis_version=basis_next,
        vector_sha256=vector_sha256(rebase.vector),
        basis_sha256=basis_sha256(release.layout, new_bases),
    )
    return replace(
        outcome,
        status=outcome.status.model_copy(update={"rebased": rebase.summary}),
        record=outcome.record.model_copy(
            update={
                "adapter_version": version_next,
                "basis_version": basis_next,
                "current_round": release.round + 1,
            }
        ),
        validation=(),  # the loss must settle again in the new basis
        ranks={**stored.ranks, **ranks},
        next_round=next_round,
        rebase=rebase,
    )


def rebase_of(
    release: Release, *, rank: int, bases: Mapping[str, np.ndarray]
) -> tuple[Rebase, dict[str, np.ndarray]]:
    """The round's adapter re-based to `rank` from the seeded `bases` (seed 001's third stage), published as
    the version after the round's own in the next basis version; and the new bases."""
    spec, layout = release.spec, release.layout
    new = rebase_adapter(layout, release.result.vector, bases, rank=rank)
    basis_next, version_next = spec.basis_version + 1, release.version_out + 1
    summary = RebaseSummary(
        basis_version=basis_next,
        adapter_version=version_next,
        rank=rank,
        truncation_error=new.truncation_error,
        kept_energy=new.kept_energy,
    )
    version = AdapterVersion(
        federation_id=spec.federation_id,
        version=version_next,
        round=release.round,
        update_norm=float(np.linalg.norm(new.vector.astype(np.float64) - release.result.vector)),
        created_at=release.now,
        basis_version=basis_next,
    )
    return Rebase(summary, basis_bytes(layout, new.bases), vector_bytes(new.vector), version), new.bases


def goes_on(release: Release, stored: Stored, outcome: RoundOutcome) -> RoundOutcome:
    """`outcome` for a federation that goes on: the next round planned from the round's adapter, with the
    ranks the round's update grew (seed 001's growth stage) when the spec grows them."""
    spec, clients = release.spec, release.clients
    planned, grown, ranks = clients, None, None
    growth = spec.rank_policy.grow_energy
    if growth is not None and release.energy is not None:
        current = {cid: info.rank for cid, info in clients.items()}
        caps = {cid: info.max_rank or spec.r_max for cid, info in clients.items()}
        after = grown_ranks(current, caps, energy=release.energy, threshold=growth)
        if after != current:
            ranks = {**stored.ranks, **after}
            planned = {cid: i.model_copy(update={"rank": after[cid]}) for cid, i in clients.items()}
            grown = {cid: r for cid, r in after.items() if r != current[cid]}
    next_round = next_round_for(
        release,
        stored.record,
        clients=planned,
        adapter_version=release.version_out,
        basis_version=stored.record.basis(spec),
        vector_sha256=vector_sha256(outcome.vector),
        basis_sha256=release.basis_sha256,
    )
    return replace(
        outcome,
        record=outcome.record.model_copy(update={"current_round": release.round + 1}),
        ranks=ranks,
        next_round=next_round,
        grown=grown,
    )


def next_round_for(
    release: Release,
    record: FederationRecord,
    *,
    clients: Mapping[str, ClientInfo],
    adapter_version: int,
    basis_version: int,
    vector_sha256: str,
    basis_sha256: str,
) -> NextRound:
    """The round after `release`'s, asking `clients` to train from `adapter_version` in `basis_version`."""
    plan, opened = open_round(
        release.spec,
        round_=release.round + 1,
        adapter_version=adapter_version,
        layout_digest=record.layout_digest,
        clients=clients,
        now=release.now,
        rounds_closed=record.rounds_closed + 1,
        basis_version=basis_version,
        vector_sha256=vector_sha256,
        basis_sha256=basis_sha256,
    )
    return NextRound(plan, opened)
