"""Closed rounds of a client-level ledger built with the cloud's own functions, for tests of what reads it."""

from __future__ import annotations

import math

from cloud_server.central_ledger import Ledger
from cloud_server.privacy_budget import settle_round
from protocol.aggregation import round_noise
from protocol.messages import Contribution, FederationSpec, schedule_multiplier

SIZE = 2306  # the demo's adapter


def contribution(client_id: str, *, share_std: float | None = None) -> Contribution:
    return Contribution(
        client_id=client_id,
        weight=1.0,
        num_examples=100,
        rank=2,
        nonce="0" * 32,
        ciphertext_sha256="0" * 64,
        noise_share_std=share_std,
    )


def run_rounds(spec: FederationSpec, *, shares: int, rounds: int, planned: int) -> Ledger:
    """`rounds` closed rounds in each of which `shares` of the `planned` hospitals' shares arrived."""
    dp = spec.central_dp
    ledger = Ledger()
    for t in range(rounds):
        z = schedule_multiplier(dp, round_index=t, rounds=spec.rounds)
        std = z * dp.clip_norm / math.sqrt(planned)
        contributions = [contribution(f"h-{i}", share_std=std) for i in range(shares)]
        noise = round_noise(
            spec, multiplier=z, contributions=contributions, layout_size=SIZE, shares_planned=planned
        )
        ledger = settle_round(
            spec,
            ledger,
            round_=t,
            noise=noise,
            contributions=contributions,
            total_weight=float(shares),
            layout_size=SIZE,
            rounds_closed_after=t + 1,
        ).ledger
    return ledger
