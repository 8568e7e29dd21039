"""The client-level ledger as pure functions: projections with the worst case a spec allows, the column
against the decrypting cloud, and ledgers stored before either existed.

Expected epsilons come from Google's `dp_accounting`, which shares no code with fedlora; multipliers and
sensitivities are worked out by hand in each test.
"""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import rdp

from cloud_server.central_ledger import Ledger
from cloud_server.privacy import report
from protocol.crypto import CKKSParams, PaillierParams
from protocol.messages import (
    CentralDPConfig,
    FederationSpec,
    LateUploadConfig,
)
from protocol.privacy_planning import planned_epsilons
from tests.ledger_rounds import SIZE, run_rounds

DELTA = 1e-5


def google(multipliers: list[float], delta: float = DELTA) -> float:
    accountant = rdp.RdpAccountant()
    for z in multipliers:
        accountant.compose(dp_accounting.GaussianDpEvent(z))
    return float(accountant.get_epsilon(delta))


def ckks_reach(clip_norm: float, size: int = SIZE) -> float:
    """One upload's reach in clip norms under CKKS: each coordinate may move by 2^(18 - 40) = 2^-22."""
    return 1.0 + math.sqrt(size) * 2.0**-22 / clip_norm


def test_planned_epsilons_charge_each_round_with_the_late_uploads_it_could_fold_in() -> None:
    # Round 0 has no earlier round to be late for; round 1 can hold a hospital fresh and one round late,
    # (1 + 0.5) C; from round 2 on also two rounds late, (1 + 0.5 + 0.25) C.
    spec = FederationSpec(
        federation_id="f",
        he=CKKSParams(),  # late uploads: a federation that does not mask
        rounds=4,
        central_dp=CentralDPConfig(noise_multiplier=2.0, delta=DELTA),
        late_uploads=LateUploadConfig(max_staleness=2, decay=0.5),
    )
    reach = ckks_reach(1.0)
    multipliers = [2.0 / (f * reach) for f in (1.0, 1.5, 1.75, 1.75)]

    epsilons = planned_epsilons(spec, layout_size=SIZE)

    assert epsilons == pytest.approx([google(multipliers[: t + 1]) for t in range(4)], rel=0.01)


@pytest.mark.parametrize(("shares", "colluding"), [(10, 0), (7, 0), (4, 0), (1, 0), (7, 3), (4, 4)])
def test_against_the_decrypting_cloud_only_the_shares_that_arrived_count(shares: int, colluding: int) -> None:
    # Prepare: z = 1 in 10 planned shares over 20 rounds; the cloud tops up what is missing, so the
    # released sum always carries z, but the cloud (and `colluding` hospitals, who know their own shares)
    # saw only the other shares: std z C sqrt((m - t) / 10). The public column is against a participating
    # hospital too, which knows its own share (or `colluding` pool theirs): std z C sqrt(1 - max(1, t) / 10).
    dp = CentralDPConfig(
        noise_multiplier=1.0, clip_norm=0.5, distributed=True, delta=DELTA, colluding_clients=colluding
    )
    spec = FederationSpec(federation_id="f", rounds=20, he=CKKSParams(), central_dp=dp)
    ledger = run_rounds(spec, shares=shares, rounds=20, planned=10)

    # Execute
    figures = report(spec, ledger, layout_size=SIZE, rounds_closed=20)

    # Assert
    reach = ckks_reach(0.5)
    known = min(max(1, colluding), shares)
    public = math.sqrt(1.0 - known / 10)
    assert figures.central_epsilon == pytest.approx(google([public / reach] * 20), rel=0.01)
    counted = shares - colluding
    if counted <= 0:
        assert figures.decryptor_unbounded and figures.decryptor_epsilon is None
        return
    expected = google([math.sqrt(counted / 10) / reach] * 20)
    assert not figures.decryptor_unbounded
    assert figures.decryptor_epsilon == pytest.approx(expected, rel=0.01)
    assert figures.central_rounds[-1].decryptor_epsilon_after == pytest.approx(expected, rel=0.01)
    assert figures.central_rounds[0].decryptor_epsilon_after == pytest.approx(
        google([math.sqrt(counted / 10) / reach]), rel=0.01
    )


def test_a_ledger_stored_before_the_decryptor_column_loads_and_falls_back_to_its_multiplier() -> None:
    # A distributed round as the ledger stored it before it kept shares and encoding: two shares of std
    # 0.5 arrived (decryptor multiplier 0.5 sqrt(2) / C = sqrt(2) at C = 0.5), the cloud topped up to z = 2.
    old = (
        '{"rounds": [{"round": 0, "mechanism": "gaussian", "noise_multiplier": 2.0, "clip_norm": 0.5,'
        ' "realised_noise_multiplier": 2.0, "decryptor_noise_multiplier": 1.4142135623730951,'
        ' "distributed": true, "shares_planned": 4, "top_up_std": 0.7071067811865476, "clients": 2,'
        ' "total_weight": 2.0, "sensitivity": 1.0, "epsilon_after": 2.4, "local": {}}]}'
    )
    spec = FederationSpec(
        federation_id="f",
        he=CKKSParams(),  # the Gaussian shares of the stored round
        rounds=3,
        central_dp=CentralDPConfig(noise_multiplier=2.0, clip_norm=0.5, distributed=True, delta=DELTA),
    )

    figures = report(spec, Ledger.model_validate_json(old), layout_size=SIZE, rounds_closed=1)

    # The encoding slack the old entry lacked is added on reading: one upload's reach under CKKS. Each share
    # is 1 C: the public column leaves out the one a participating hospital knows, sqrt(4 - 1); against the
    # cloud, the smallest sum it may hold alone is an edge's k = 2 shares (not recorded then), sqrt(2).
    reach = ckks_reach(0.5)
    assert figures.central_epsilon == pytest.approx(google([math.sqrt(3) / reach]), rel=0.01)
    assert figures.decryptor_epsilon == pytest.approx(google([math.sqrt(2) / reach]), rel=0.01)
    assert figures.central_rounds[0].shares_arrived == 2


def test_under_packed_paillier_the_decrypting_cloud_column_composes_the_arrived_skellam_shares() -> None:
    # Prepare: Skellam shares on the Paillier lattice, 2 of 4 planned shares arrive, one hospital colludes.
    he = PaillierParams(clip=16.0, quant_bits=20)
    z, clip = 1.0, 0.5
    dp = CentralDPConfig(
        noise_multiplier=z, clip_norm=clip, distributed=True, delta=DELTA, colluding_clients=1
    )
    spec = FederationSpec(federation_id="f", rounds=2, he=he, central_dp=dp)
    ledger = run_rounds(spec, shares=2, rounds=1, planned=4)

    # Execute
    figures = report(spec, ledger, layout_size=SIZE, rounds_closed=1)

    # Assert: in quantisation steps (step = 16 / (2^19 - 1)), one upload reaches C / step + sqrt(d) / 2
    # (Agarwal, Kairouz, Liu 2021); the cloud and the colluder know all but one share, of std z C / 2. The
    # Skellam terms beyond the Gaussian one are negligible at this variance, so the epsilon is a
    # Gaussian's at std / sensitivity (dp_accounting). Publicly the released z C (topped up) less the one
    # share the colluder knows: z C sqrt(3) / 2.
    step = 16.0 / (2**19 - 1)
    l2 = clip / step + math.sqrt(SIZE) / 2
    assert figures.decryptor_epsilon == pytest.approx(google([(z * clip / 2 / step) / l2]), rel=0.01)
    public = z * clip * math.sqrt(3) / 2
    assert figures.central_epsilon == pytest.approx(google([(public / step) / l2]), rel=0.01)


@pytest.mark.parametrize(
    ("he", "distributed", "distribution", "step"),
    [
        (PaillierParams(clip=16.0, quant_bits=20), True, "skellam", 16.0 / (2**19 - 1)),
        (PaillierParams(clip=16.0, quant_bits=20), False, "gaussian", None),  # the cloud's own draw
        (CKKSParams(), True, "gaussian", None),
    ],
)
def test_each_round_says_which_distribution_it_was_counted_as_and_on_which_lattice(
    he: PaillierParams | CKKSParams, distributed: bool, distribution: str, step: float | None
) -> None:
    # Prepare: one round of z = 1, four of four shares when the noise is distributed.
    dp = CentralDPConfig(noise_multiplier=1.0, clip_norm=0.5, distributed=distributed, delta=DELTA)
    spec = FederationSpec(federation_id="f", rounds=1, he=he, central_dp=dp)
    ledger = run_rounds(spec, shares=4, rounds=1, planned=4)

    # Execute
    (row,) = report(spec, ledger, layout_size=SIZE, rounds_closed=1).central_rounds

    # Assert: what a reader needs to recompute a Skellam round's epsilon on its own: the lattice's step
    # (quantisation steps of 16 / (2^19 - 1)) and the coordinates that bound an integer vector's L1 norm.
    assert row.noise_distribution == distribution
    assert row.lattice_step == (pytest.approx(step) if step is not None else None)
    assert row.coordinates == (SIZE if step is not None else None)
