"""What the client-level ledger charges that it did not before: encoding in the sensitivity, late uploads in
the budget projection, and the column against the decrypting cloud.

    PYTHONPATH=. .venv/bin/python bench/central_ledger_figures.py

Every figure comes from the ledger's own functions (`protocol.privacy_planning`,
`cloud_server.privacy_budget`, `cloud_server.privacy`); `tests/unit/test_privacy_ledger.py` and
`tests/cloud/test_privacy.py` check such figures against Google's `dp_accounting`. Prints three tables.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from cloud_server.central_ledger import Ledger
from cloud_server.privacy import report
from cloud_server.privacy_budget import settle_round
from protocol.aggregation import round_noise
from protocol.crypto import CKKSParams, PaillierParams
from protocol.messages import (
    CentralDPConfig,
    Contribution,
    FederationSpec,
    LateUploadConfig,
    NoiseMechanism,
)
from protocol.privacy import GaussianEvent, make_accountant
from protocol.privacy_planning import next_epsilon

SIZES = {"demo adapter": 2306, "MiniLM, both modules of 6 layers at r_max 8": 37_634}


def hospital(index: int, *, share_std: float | None = None) -> Contribution:
    return Contribution(
        client_id=f"h-{index}",
        weight=1.0,
        num_examples=100,
        rank=1,
        nonce="0" * 32,
        ciphertext_sha256="0" * 64,
        noise_share_std=share_std,
    )


def closed(
    spec: FederationSpec,
    *,
    rounds: int,
    size: int,
    shares: int = 0,
    planned: int = 1,
    per_edge: int | None = None,
) -> Ledger:
    """`rounds` closed rounds of four hospitals (or `shares` of `planned` shares, with distributed noise),
    behind edges of `per_edge` hospitals each (None: one edge)."""
    dp, ledger = spec.central_dp, Ledger()
    count = shares or 4
    std = dp.noise_multiplier * dp.clip_norm / math.sqrt(planned) if dp.distributed else None
    people = [hospital(i, share_std=std) for i in range(count)]
    step = per_edge or count
    sums = [people[i : i + step] for i in range(0, count, step)]
    for t in range(rounds):
        noise = round_noise(
            spec,
            multiplier=dp.noise_multiplier,
            contributions=people,
            layout_size=size,
            shares_planned=planned,
            sums=sums,
        )
        ledger = settle_round(
            spec,
            ledger,
            round_=t,
            noise=noise,
            contributions=people,
            total_weight=float(count),
            layout_size=size,
            rounds_closed_after=t + 1,
        ).ledger
    return ledger


def encoding_table() -> Table:
    table = Table(
        title="one round under packed Paillier (step 1/32767, C = 1, z = 2): encoding in the epsilon"
    )
    for column in (
        "adapter",
        "coordinates",
        "noise",
        "sensitivity / C",
        "epsilon",
        "epsilon at C",
        "understated",
    ):
        table.add_column(column, justify="right")
    for name, size in SIZES.items():
        for mechanism in (NoiseMechanism.LAPLACE, NoiseMechanism.GAUSSIAN):
            dp = CentralDPConfig(mechanism=mechanism, noise_multiplier=2.0, clip_norm=1.0)
            spec = FederationSpec(federation_id="f", he=PaillierParams(), central_dp=dp, rounds=1)
            ledger = closed(spec, rounds=1, size=size)
            figures = report(spec, ledger, layout_size=size, rounds_closed=1)
            entry = figures.central_rounds[0]
            at_c = make_accountant("rdp")
            at_c.compose(GaussianEvent(noise_multiplier=2.0))
            plain = 0.5 if mechanism is NoiseMechanism.LAPLACE else at_c.epsilon(delta=dp.delta)
            epsilon = figures.central_epsilon or math.inf
            table.add_row(
                name,
                f"{size:,}",
                mechanism.value,
                f"{entry.sensitivity:.4f}",
                f"{epsilon:.4f}",
                f"{plain:.4f}",
                f"{epsilon / plain - 1:.1%}",
            )
    return table


def late_table() -> Table:
    size, budget, z = 2306, 3.189, 2.0
    table = Table(
        title=f"budget {budget}, z = {z:g}, late uploads (decay 0.5, max staleness 1): may round 1 run?"
    )
    for column in ("round 1 projected", "projected epsilon", "round 1 runs", "epsilon after round 1"):
        table.add_column(column, justify="right")
    late = LateUploadConfig(max_staleness=1, decay=0.5)
    spec = FederationSpec(
        federation_id="f",
        he=CKKSParams(),  # late uploads: a federation that does not mask
        central_dp=CentralDPConfig(noise_multiplier=z, epsilon_budget=budget),
        late_uploads=late,
        rounds=3,
    )
    ledger = closed(spec, rounds=1, size=size)
    first = ledger.rounds[0]
    spent = make_accountant("rdp")
    spent.compose(GaussianEvent(noise_multiplier=first.realised_noise_multiplier))
    # The old ledger charged round 0 at z and projected round 1 at z; a hospital in round 1 fresh and one
    # round late reaches (1 + decay) C, which it then charged.
    at_c = make_accountant("rdp")
    at_c.compose(GaussianEvent(noise_multiplier=z, steps=2))
    actual = make_accountant("rdp")
    actual.compose(GaussianEvent(noise_multiplier=z))
    actual.compose(GaussianEvent(noise_multiplier=z / 1.5))
    worst = next_epsilon(spec, spent, rounds_closed=1, next_round=1, layout_size=size)
    old = at_c.epsilon(delta=1e-5)
    table.add_row(
        "at C (the old ledger)",
        f"{old:.3f}",
        "yes" if old <= budget else "no",
        f"{actual.epsilon(delta=1e-5):.3f}",
    )
    table.add_row(
        "worst case (late uploads, encoding)",
        f"{worst:.3f}",
        "yes" if worst <= budget else "no",
        f"(stops at {first.epsilon_after:.3f})",
    )
    return table


def decryptor_table() -> Table:
    table = Table(
        title="z = 1, 10 planned shares, 20 rounds (CKKS, delta 1e-5): public (a participating hospital "
        "included) and against the cloud, which can decrypt each edge's sum alone"
    )
    for column in ("shares arrived", "hospitals per edge", "colluding", "public", "against the cloud"):
        table.add_column(column, justify="right")
    for shares, per_edge, colluding in (
        (10, 10, 0),
        (10, 5, 0),
        (10, 2, 0),
        (7, 7, 0),
        (4, 4, 0),
        (2, 2, 0),
        (10, 10, 3),
        (10, 5, 3),
    ):
        dp = CentralDPConfig(noise_multiplier=1.0, distributed=True, colluding_clients=colluding)
        spec = FederationSpec(
            federation_id="f", he=CKKSParams(), central_dp=dp, rounds=20, min_clients_per_edge=2
        )
        ledger = closed(spec, rounds=20, size=2306, shares=shares, planned=10, per_edge=per_edge)
        figures = report(spec, ledger, layout_size=2306, rounds_closed=20)
        cloud = "unbounded" if figures.decryptor_epsilon is None else f"{figures.decryptor_epsilon:.1f}"
        public = "unbounded" if figures.central_epsilon is None else f"{figures.central_epsilon:.1f}"
        table.add_row(str(shares), str(per_edge), str(colluding), public, cloud)
    return table


def main() -> None:
    console = Console(width=max(Console().width, 120))
    for table in (encoding_table(), late_table(), decryptor_table()):
        console.print(table)


if __name__ == "__main__":
    main()
