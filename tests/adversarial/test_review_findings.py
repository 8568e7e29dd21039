"""Review of issue 18's first two defences (acceptance of edge sums; `k` per coordinate), tried as an attacker
within their stated scope would. Each test asserts the property the defence promises and is a strict xfail
while the defect it reproduces is open: it fails today, and turns green (so XPASS, an error) once fixed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protocol.strategies import AggregationStrategy
from tests.adversarial.test_cloud_acceptance import TOPOLOGY, deltas_for
from tests.adversarial.test_rank_columns import RANKS, deltas_at
from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio

CKKS_TOLERANCE = 1e-5


@pytest.mark.xfail(
    strict=True,
    reason="issue 18 review: held-back columns are still decrypted by the curious cloud "
    "(reach is applied after decryption, hospitals above the published rank still upload them)",
)
async def test_the_cloud_never_decrypts_a_column_fewer_than_k_hospitals_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: no coordinate the cloud decrypts is the sum of fewer than `k` hospitals (the cloud is
    curious, and the promise is "nobody learns anything about one hospital but sums of at least k").

    Same round as test_rank_columns: k = 2, only client-d's rank reaches column 1 of B, and the plan says in
    advance that column 1 will not be published (`published_rank` 1). Client-d still uploads column 1 (ranks
    are not capped at the published rank), edge-2 sums it with c's zeros, and the cloud decrypts the total:
    column 1 of what it decrypted is client-d's update exactly. Holding it back from the published adapter
    hides it from readers of the adapter, not from the cloud that decrypts it."""
    decrypted: list[np.ndarray] = []
    original = AggregationStrategy.next_global

    def spy(self: AggregationStrategy, previous: np.ndarray, round_sum: Any) -> np.ndarray:
        decrypted.append(np.array(round_sum.noisy_sum, dtype=np.float64))
        return original(self, previous, round_sum)

    monkeypatch.setattr(AggregationStrategy, "next_global", spy)
    rng = np.random.default_rng(41)
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http, small_spec(), max_ranks={"client-a": 1, "client-b": 1, "client-c": 1}
        )
        plan = await fed.start(cloud.http)
        assert plan.published_rank == 1
        layout, _ = await cloud.context.federations.layout(fed.fid)
        (module,) = [entry.name for entry in layout.lora]
        deltas = deltas_at(layout, rng, RANKS)
        for edge_id, edge in fed.edges.items():
            body = await fed.aggregate(cloud, edge_id, 0, {c: deltas[c] for c in edge.clients}, ranks=RANKS)
            assert (await fed.post(cloud.http, body)).status_code == 202
        assert (await cloud.status(fed.fid, 0)).published_rank == 1

    (total,) = decrypted
    d_column = layout.unflatten(deltas["client-d"])[module][:, 1]
    seen = layout.unflatten(total)[module][:, 1]
    # Today the cloud holds client-d's column 1 to CKKS precision.
    assert np.max(np.abs(seen - d_column)) > 1e-3, "the cloud decrypted client-d's column 1 alone"


@pytest.mark.xfail(
    strict=True,
    reason="issue 18 review: count == manifest is met with honest counts by naming hospitals that never "
    "uploaded (unsigned manifest lines), so m-fold weighting and single-hospital sums still pass",
)
@pytest.mark.parametrize("forgery", ["three-fold", "single-hospital"])
async def test_a_sum_that_weighs_one_hospital_more_than_once_is_refused(forgery: str) -> None:
    """Property (the one `check_count` is there for): no hospital's encryption weighs more than once in a sum
    the cloud accepts, so every accepted sum is `k` distinct hospitals.

    Edge-1 (hospitals a, b, c, d) adds a's ciphertext to itself and names hospitals that never uploaded to
    keep the envelope's count equal to its manifest: no count rewritten, no ciphertext re-randomised, only
    homomorphic additions with the public key and manifest lines the cloud cannot tell from real ones.
    - three-fold: a, b uploaded; manifest a, b, c, d over 3 Enc(a) + Enc(b): a weighs three times;
    - single-hospital: only a uploaded; manifest a, b over 2 Enc(a): the round's release is a's update
      (published column = 2 a / 2 on edge-1's part: `k` per edge defeated).
    The cloud answers 202 to both and publishes them."""
    rng = np.random.default_rng(51)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), TOPOLOGY)
        await fed.start(cloud.http)
        named = ("client-a", "client-b", "client-c", "client-d")
        if forgery == "single-hospital":
            named = ("client-a", "client-b")
        deltas = deltas_for(rng, named)
        enc_a = fed.scheme.encrypt(deltas["client-a"])
        parts = [enc_a] * (len(named) - 1)
        if forgery == "three-fold":
            parts.append(fed.scheme.encrypt(deltas["client-b"]))
        else:
            parts.append(enc_a)
        forged = fed.scheme.serialize(fed.scheme.sum(parts))
        assert fed.scheme.deserialize(forged).count == len(named)
        body = await fed.aggregate(cloud, "edge-1", 0, deltas, ciphertext=forged)

        response = await fed.post(cloud.http, body)

        assert response.status_code in (400, 409), (response.status_code, response.text)
