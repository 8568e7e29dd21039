"""`round_outcome`: what a closing round publishes, decided from plain values without a store.

Each test builds a decrypted round (`Release`) and the state its commit read (`Stored`) by hand, and checks
the outcome against values worked out here: counts, versions, digests of the bytes, the branch taken.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from cloud_server.central_ledger import Ledger
from cloud_server.records import ClientStats, FederationRecord, StoredAggregate
from cloud_server.round_outcome import Release, Stored, round_outcome, still_open
from protocol.aggregation import Aggregated, LateGroup, RoundNoise
from protocol.ffa import AdapterLayout, seeded_bases
from protocol.messages import (
    CentralDPConfig,
    ClientInfo,
    Contribution,
    ConvergenceConfig,
    EdgeProgress,
    FederationSpec,
    FederationState,
    NoiseMechanism,
    RankPolicy,
    RoundState,
    RoundStatus,
)
from services.identity import SigningKey

OPENED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = OPENED + timedelta(seconds=30)
# One module with 3 outputs (4 inputs), r_max 2, and a head of 2: B is 3 x 2.
LAYOUT = AdapterLayout.build(lora_out_features={"m": 3}, r_max=2, head_shapes={"head": (2,)})
EDGES = {"edge-1": ("client-a", "client-b"), "edge-2": ("client-c", "client-d")}
NO_NOISE = RoundNoise(NoiseMechanism.NONE, 0.0, 1.0, False, 0.0, 0.0)


def spec(**overrides: Any) -> FederationSpec:
    values: dict[str, Any] = {"federation_id": "fed-1", "r_max": 2, "rounds": 3}
    return FederationSpec(**(values | overrides))


def line(client_id: str, rank: int = 1, **fields: Any) -> Contribution:
    values: dict[str, Any] = {
        "client_id": client_id,
        "weight": 1.0,
        "num_examples": 10,
        "rank": rank,
        "nonce": client_id.encode().hex().ljust(32, "0")[:32],
        "ciphertext_sha256": "0" * 64,
    }
    return Contribution(**(values | fields))


def header(edge_id: str, contributions: tuple[Contribution, ...]) -> StoredAggregate:
    return StoredAggregate(
        edge_id=edge_id,
        round=0,
        basis_version=0,
        idempotency_key=f"{edge_id}:0",
        ciphertext_sha256="1" * 64,
        ciphertext_bytes=100,
        contributions=contributions,
        signature=b"s" * 64,
        received_at=NOW,
    )


def client(client_id: str, edge_id: str, *, rank: int = 1, max_rank: int | None = None) -> ClientInfo:
    return ClientInfo(
        client_id=client_id,
        edge_id=edge_id,
        public_key=SigningKey.from_bytes(bytes([7]) * 32).public_bytes,
        num_examples=10,
        rank=rank,
        enrolled_at=OPENED,
        max_rank=max_rank,
    )


def record(**overrides: Any) -> FederationRecord:
    values: dict[str, Any] = {
        "created_at": OPENED,
        "he_fingerprint": "2" * 64,
        "layout_size": LAYOUT.size,
        "layout_digest": "3" * 64,
        "current_round": 0,
    }
    return FederationRecord(**(values | overrides))


def opened(round_: int = 0, adapter_version: int = 0) -> RoundStatus:
    return RoundStatus(
        federation_id="fed-1",
        round=round_,
        state=RoundState.OPEN,
        opened_at=OPENED,
        adapter_version_in=adapter_version,
        edges=tuple(EdgeProgress(edge_id=e, expected_clients=2, uploads_accepted=0) for e in EDGES),
    )


def release(the_spec: FederationSpec | None = None, **overrides: Any) -> Release:
    """Round 0 of four rank-1 hospitals on two edges, each in time at weight 1, from adapter version 0."""
    vector = np.arange(LAYOUT.size, dtype=np.float32) / 10
    values: dict[str, Any] = {
        "spec": the_spec or spec(),
        "round": 0,
        "now": NOW,
        "seen": record(),
        "headers": {e: header(e, tuple(line(c) for c in ids)) for e, ids in EDGES.items()},
        "late": [],
        "result": Aggregated(vector=vector, update_norm=0.5, noise_std=0.0, summands=4, published_rank=1),
        "noise": NO_NOISE,
        "metrics": {"aggregation_s": 0.25},
        "layout": LAYOUT,
        "clients": {c: client(c, e, max_rank=2) for e, ids in EDGES.items() for c in ids},
        "basis_sha256": "6" * 64,
        "bases": None,
        "energy": None,
    }
    return Release(**(values | overrides))


def stored(**overrides: Any) -> Stored:
    values: dict[str, Any] = {
        "record": record(),
        "status": opened(),
        "ledger": Ledger(),
        "validation": (),
        "ranks": {},
        "stats": {},
    }
    return Stored(**(values | overrides))


def test_a_round_that_goes_on_publishes_its_adapter_and_plans_the_next_round_from_it() -> None:
    # Prepare
    closing = release()

    # Execute
    outcome = round_outcome(closing, stored())

    # Assert: the adapter's bytes are float32 little-endian, and the next plan binds to their digest.
    expected_bytes = (np.arange(LAYOUT.size, dtype=np.float32) / 10).astype("<f4").tobytes()
    assert outcome.vector == expected_bytes
    assert (outcome.version.version, outcome.version.round, outcome.version.update_norm) == (1, 0, 0.5)
    status = outcome.status
    assert (status.state, status.adapter_version_out, status.closed_at) == (RoundState.CLOSED, 1, NOW)
    assert status.duration_s == 30.0
    assert (status.clients_contributed, status.total_weight, status.late_contributions) == (4, 4.0, 0)
    assert status.published_rank == 1 and status.metrics == {"aggregation_s": 0.25}
    assert [e.uploads_accepted for e in status.edges] == [2, 2] and all(e.forwarded for e in status.edges)
    assert status.stop_reason is None and status.rebased is None
    assert (outcome.record.adapter_version, outcome.record.rounds_closed) == (1, 1)
    assert outcome.record.current_round == 1 and outcome.record.state is FederationState.ACTIVE
    assert outcome.next_round is not None
    plan = outcome.next_round.plan
    assert (plan.round, plan.adapter_version, plan.basis_version) == (1, 1, 0)
    assert plan.vector_sha256 == hashlib.sha256(expected_bytes).hexdigest()
    assert plan.basis_sha256 == "6" * 64 and not plan.signature  # the writer signs it
    assert plan.client_ranks == dict.fromkeys(closing.clients, 1)
    assert outcome.next_round.status.round == 1 and outcome.next_round.status.state is RoundState.OPEN
    assert len(outcome.ledger.rounds) == 1 and outcome.ledger.rounds[0].round == 0
    assert outcome.validation is None and outcome.ranks is None and outcome.rebase is None
    assert not outcome.grown and not outcome.exhausted


def test_each_contribution_counts_once_in_the_stats_and_a_hospital_in_time_and_late_twice() -> None:
    # Prepare: client-a in time and late (at weight 1 x decay 0.5), with 3 rounds on record before.
    late = LateGroup(
        1,
        0.5,
        [b""],
        [line("client-a", local_epsilon=2.0), line("client-e", local_epsilon=1.0)],
        ["edge-1"],
    )
    before = {"client-a": ClientStats(rounds_contributed=3, local_epsilon=1.5)}
    headers = {
        "edge-1": header("edge-1", (line("client-a", local_epsilon=2.5), line("client-b"))),
        "edge-2": header("edge-2", (line("client-c"), line("client-d"))),
    }

    # Execute
    outcome = round_outcome(release(late=[late], headers=headers), stored(stats=before))

    # Assert
    stats = outcome.stats
    assert set(stats) == {"client-a", "client-b", "client-c", "client-d", "client-e"}
    assert stats["client-a"].rounds_contributed == 5 and stats["client-a"].local_epsilon == 2.5
    assert stats["client-b"].rounds_contributed == 1 and stats["client-b"].local_epsilon is None
    assert stats["client-e"].local_epsilon == 1.0 and stats["client-e"].last_seen == NOW
    assert outcome.status.total_weight == 4 + 2 * 0.5 and outcome.status.late_contributions == 2


def test_the_last_round_completes_the_federation_and_plans_nothing() -> None:
    outcome = round_outcome(release(spec(rounds=1)), stored())

    assert outcome.record.state is FederationState.COMPLETED
    assert outcome.record.reason == outcome.status.stop_reason == "all 1 rounds closed"
    assert outcome.next_round is None and outcome.record.current_round == 0


def test_the_validation_loss_is_the_example_weighted_mean_and_a_settled_loss_completes() -> None:
    # Prepare: losses 0.5 on 10 examples and 0.8 on 30: (5 + 24) / 40 = 0.725; the last round had 0.73.
    the_spec = spec(convergence=ConvergenceConfig(min_delta=0.01, patience=1))
    headers = {
        "edge-1": header(
            "edge-1",
            (
                line("client-a", validation_loss=0.5, validation_examples=10),
                line("client-b", validation_loss=0.8, validation_examples=30),
            ),
        )
    }

    # Execute
    moving = round_outcome(release(the_spec, headers=headers), stored(validation=((0, 0.9),)))
    settled = round_outcome(release(the_spec, headers=headers), stored(validation=((0, 0.73),)))

    # Assert
    assert moving.validation == ((0, 0.9), (0, pytest.approx(0.725)))
    assert moving.status.metrics["validation_loss"] == pytest.approx(0.725)
    assert moving.record.state is FederationState.ACTIVE and moving.next_round is not None
    assert settled.record.state is FederationState.COMPLETED and settled.next_round is None
    assert settled.stop_reason is not None and settled.stop_reason.startswith("converged:")


def test_the_first_settled_loss_rebases_to_the_common_rank_and_goes_on_in_the_new_basis() -> None:
    # Prepare: re-base to rank 1; client-d caps itself at 1 anyway.
    the_spec = spec(
        rank_policy=RankPolicy(rebase_rank=1), convergence=ConvergenceConfig(min_delta=0.01, patience=1)
    )
    headers = {
        "edge-1": header("edge-1", (line("client-a", 2, validation_loss=0.70), line("client-b", 2))),
    }
    bases = seeded_bases(LAYOUT, {"m": 4}, seed=0, basis_version=0)
    closing = release(the_spec, headers=headers, bases=bases)

    # Execute
    outcome = round_outcome(closing, stored(validation=((0, 0.705),), ranks={"client-z": 2}))

    # Assert
    assert outcome.rebase is not None
    assert outcome.rebase.version.version == 2 and outcome.rebase.version.basis_version == 1
    assert outcome.rebase.summary.adapter_version == 2 and outcome.rebase.summary.rank == 1
    assert len(outcome.rebase.basis) == 2 * 4 * 4  # r_max x in_features float32 values
    assert outcome.status.rebased == outcome.rebase.summary and outcome.status.stop_reason is None
    assert outcome.version.version == 1  # the round's own adapter is published too
    assert (outcome.record.adapter_version, outcome.record.basis_version) == (2, 1)
    assert outcome.record.current_round == 1 and outcome.record.rounds_closed == 1
    assert outcome.validation == ()
    assert outcome.ranks == {"client-z": 2} | dict.fromkeys(closing.clients, 1)
    assert outcome.next_round is not None
    plan = outcome.next_round.plan
    assert (plan.adapter_version, plan.basis_version) == (2, 1)
    assert plan.vector_sha256 == hashlib.sha256(outcome.rebase.vector).hexdigest()
    assert plan.client_ranks == dict.fromkeys(closing.clients, 1)


def test_without_a_seeded_basis_to_rebase_from_a_settled_loss_completes() -> None:
    """Once re-based (`basis_version` on the record), the next settled loss ends the federation."""
    the_spec = spec(
        rank_policy=RankPolicy(rebase_rank=1), convergence=ConvergenceConfig(min_delta=0.01, patience=1)
    )
    headers = {"edge-1": header("edge-1", (line("client-a", validation_loss=0.70), line("client-b")))}
    closing = release(the_spec, headers=headers, seen=record(basis_version=1))

    outcome = round_outcome(closing, stored(validation=((0, 0.705),), record=record(basis_version=1)))

    assert outcome.rebase is None and outcome.record.state is FederationState.COMPLETED


def test_a_column_in_full_use_doubles_the_ranks_below_its_caps() -> None:
    # Prepare: column 0 carries all of the energy; rank-1 clients under a cap of 2 double, client-d is capped.
    clients = {
        c: client(c, e, max_rank=None if c == "client-d" else 2) for e, ids in EDGES.items() for c in ids
    }
    clients["client-d"] = client("client-d", "edge-2", max_rank=1)
    closing = release(
        spec(rank_policy=RankPolicy(grow_energy=1.0)), clients=clients, energy=np.array([1.0, 0.0])
    )

    # Execute
    outcome = round_outcome(closing, stored(ranks={"client-z": 1}))

    # Assert
    grown = {"client-a": 2, "client-b": 2, "client-c": 2}
    assert outcome.grown == grown
    assert outcome.ranks == {"client-z": 1, "client-d": 1} | grown
    assert outcome.next_round is not None
    assert outcome.next_round.plan.client_ranks == grown | {"client-d": 1}


def test_no_growth_leaves_the_stored_ranks_alone() -> None:
    closing = release(spec(rank_policy=RankPolicy(grow_energy=1.0)), energy=np.array([0.0, 0.0]))

    outcome = round_outcome(closing, stored())

    assert outcome.ranks is None and not outcome.grown


def test_a_next_round_past_the_budget_ends_the_federation_with_the_reason() -> None:
    # Prepare: Gaussian noise z = 1 and a budget no round fits under.
    dp = CentralDPConfig(noise_multiplier=1.0, epsilon_budget=0.01)
    noise = RoundNoise(NoiseMechanism.GAUSSIAN, 1.0, 1.0, False, 0.0, 1.0)

    # Execute
    outcome = round_outcome(release(spec(central_dp=dp), noise=noise), stored())

    # Assert
    assert outcome.exhausted and outcome.record.state is FederationState.BUDGET_EXHAUSTED
    assert outcome.stop_reason is not None and "above the budget 0.01" in outcome.stop_reason
    assert outcome.record.reason == outcome.stop_reason and outcome.next_round is None
    assert outcome.epsilon is not None and outcome.epsilon > 0


@pytest.mark.parametrize(
    ("the_record", "status", "expected"),
    [
        (record(), opened(), True),
        (record(), opened().model_copy(update={"state": RoundState.CLOSED}), False),
        (record(), opened().model_copy(update={"state": RoundState.FAILED}), False),
        (record(state=FederationState.STOPPED), opened(), False),
        (record(current_round=1), opened(), False),
        (record(adapter_version=1), opened(), False),
    ],
    ids=["open", "closed", "failed", "stopped", "next-round", "adapter-moved"],
)
def test_a_round_is_committed_only_while_it_is_open_on_the_adapter_it_was_decrypted_from(
    the_record: FederationRecord, status: RoundStatus, expected: bool
) -> None:
    assert still_open(release(), the_record, status) is expected


def test_a_release_is_a_value() -> None:
    """The same inputs decide the same outcome (a transaction that retries writes the same bytes)."""
    closing, state = release(), stored()

    assert round_outcome(closing, state) == round_outcome(replace(closing), state)
