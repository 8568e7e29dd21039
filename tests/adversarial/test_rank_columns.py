"""A LoRA column that fewer than `k` hospitals reach, tried as a curious reader of the published adapter would
(issue 18, item 4: "`k` per coordinate").

Every manifest is honest and every sum holds `k` hospitals, yet with mixed ranks a column of `B` that only
one hospital's rank reaches is that hospital's update alone: the published adapter's column times the
round's total weight (public in the manifests) gave it back. Each test states the property it checks; each
failed before the cloud held such columns back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio

CKKS_TOLERANCE = 1e-5
# k = 2 (small_spec). Every hospital but client-d caps its rank at 1, so only client-d's rank (r_max = 2)
# reaches column 1 of B.
RANKS = {"client-a": 1, "client-b": 1, "client-c": 1, "client-d": 2}


def deltas_at(layout, rng: np.random.Generator, ranks: dict[str, int]) -> dict[str, np.ndarray]:
    """One honest delta per hospital: its `B` zero beyond its rank (as training at that rank makes it)."""
    (module,) = [entry.name for entry in layout.lora]
    out = {}
    for cid, rank in ranks.items():
        tensors = {e.name: rng.normal(0.0, 0.01, e.shape) for e in layout.head}
        tensors[module] = rng.normal(0.0, 0.01, (layout.lora[0].shape[0], rank))
        out[cid] = layout.flatten(tensors).astype(np.float64)
    return out


async def capped_round(
    cloud, spec, rng: np.random.Generator
) -> tuple[Federation, Any, Any, str, dict[str, np.ndarray]]:
    """Round 0 of `spec` with every hospital but client-d capped at rank 1, each edge forwarding its honest
    sum: the federation, its plan, its layout, the LoRA module's name and the hospitals' deltas."""
    fed = await Federation.create(cloud.http, spec, max_ranks={"client-a": 1, "client-b": 1, "client-c": 1})
    plan = await fed.start(cloud.http)
    assert plan.client_ranks == RANKS
    layout, _ = await cloud.context.federations.layout(fed.fid)
    (module,) = [entry.name for entry in layout.lora]
    deltas = deltas_at(layout, rng, RANKS)
    for edge_id, edge in fed.edges.items():
        body = await fed.aggregate(cloud, edge_id, 0, {c: deltas[c] for c in edge.clients}, ranks=RANKS)
        assert (await fed.post(cloud.http, body)).status_code == 202
    return fed, plan, layout, module, deltas


@pytest.mark.parametrize("normalize", [False, True], ids=["total-weight", "rank-columns"])
async def test_a_column_only_one_hospital_reaches_is_not_published(normalize: bool) -> None:
    """Property: no published coordinate of the adapter is the sum of fewer than `k` hospitals.

    Client-d alone trains column 1 of `B`. The cloud published it as `d's column / W` (W = 4, the total
    weight, or d's own weight 1 with `normalize_rank_columns`), so anyone holding the adapter read d's update.
    Now the plan announces in advance that only rank 1 is published (the k-th largest planned rank), the
    round's status says column 1 was held back, and the published column 1 is the previous adapter's;
    column 0, reached by all four, and the head are the plain mean as before."""
    rng = np.random.default_rng(41)
    spec = small_spec(normalize_rank_columns=normalize)
    async with running_cloud() as cloud:
        fed, plan, layout, module, deltas = await capped_round(cloud, spec, rng)
        before = layout.unflatten(await cloud.vector(fed.fid, 0))
        after = layout.unflatten(await cloud.vector(fed.fid, 1))
        status = await cloud.status(fed.fid, 0)

    d_column = layout.unflatten(deltas["client-d"])[module][:, 1]
    divisor = 1.0 if normalize else 4.0
    leaked = np.max(np.abs(after[module][:, 1] * divisor - d_column))
    assert leaked > 1e-3, "column 1 of the published adapter is client-d's update divided by a public weight"
    np.testing.assert_array_equal(after[module][:, 1], before[module][:, 1])
    assert plan.published_rank == 1 and status.published_rank == 1
    everyone = np.mean([layout.unflatten(d)[module][:, 0] for d in deltas.values()], axis=0)
    np.testing.assert_allclose(after[module][:, 0], everyone, atol=CKKS_TOLERANCE)
    for entry in layout.head:
        heads = np.mean([layout.unflatten(d)[entry.name] for d in deltas.values()], axis=0)
        np.testing.assert_allclose(after[entry.name], heads, atol=CKKS_TOLERANCE)
