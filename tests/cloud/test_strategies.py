"""Aggregation strategies over the API: mixed ranks aggregate exactly, rank columns, rank policies.

Expected values are dense computations in the test: each client's `dW_i = dB_i A_i` with `A_i` the first
`r_i` rows of the frozen basis, averaged with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol.clair import ClairError, decompose
from protocol.ffa import frozen_basis
from protocol.messages import ClientInfo, RankPolicy, RankPolicyKind, RoundPlan
from protocol.strategies import ClairStrategy, EdgeRow
from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio
RANKS = {"client-a": 1, "client-b": 2, "client-c": 1, "client-d": 2}


async def mixed_rank_round(cloud, spec, rng):
    """Round 0 with clients of ranks 1 and 2; returns the layout, the clients' B deltas and head deltas."""
    fed = await Federation.create(cloud.http, spec, max_ranks=RANKS)
    plan = await fed.start(cloud.http)
    assert plan.client_ranks == RANKS
    layout, in_features = await cloud.context.federations.layout(fed.fid)
    (module,) = [entry.name for entry in layout.lora]
    deltas, b_parts = {}, {}
    for cid, rank in RANKS.items():
        tensors = {e.name: rng.normal(0, 0.01, e.shape) for e in layout.head}
        tensors[module] = b_parts[cid] = rng.normal(0, 0.01, (layout.lora[0].shape[0], rank))
        deltas[cid] = layout.flatten(tensors).astype(np.float64)  # padded with zeros beyond the rank
    for edge_id, edge in fed.edges.items():
        body = await fed.aggregate(cloud, edge_id, 0, {c: deltas[c] for c in edge.clients}, ranks=RANKS)
        assert (await fed.post(cloud.http, body)).status_code == 202
    new = layout.unflatten(await cloud.vector(fed.fid, 1))
    basis = frozen_basis(
        seed=spec.seed, basis_version=0, module=module, r_max=spec.r_max, in_features=in_features[module]
    )
    return new, module, b_parts, basis, deltas, layout


async def test_mixed_ranks_aggregate_exactly() -> None:
    spec = small_spec()
    async with running_cloud() as cloud:
        new, module, b_parts, basis, _, _ = await mixed_rank_round(cloud, spec, np.random.default_rng(1))

    dense = np.mean([b @ basis[: b.shape[1]] for b in b_parts.values()], axis=0)  # mean of dB_i A_i
    np.testing.assert_allclose(new[module] @ basis, dense, atol=1e-7)


async def test_rank_columns_are_averaged_over_the_clients_that_reach_them() -> None:
    spec = small_spec(normalize_rank_columns=True)
    async with running_cloud() as cloud:
        new, module, b_parts, _, deltas, layout = await mixed_rank_round(
            cloud, spec, np.random.default_rng(2)
        )

    first = np.mean([b[:, 0] for b in b_parts.values()], axis=0)  # every client trains column 0
    second = np.mean([b_parts[c][:, 1] for c in ("client-b", "client-d")], axis=0)  # only the rank-2 ones
    np.testing.assert_allclose(new[module][:, 0], first, atol=1e-6)
    np.testing.assert_allclose(new[module][:, 1], second, atol=1e-6)
    head = layout.head[0].name
    heads = [layout.unflatten(d)[head] for d in deltas.values()]
    np.testing.assert_allclose(new[head], np.mean(heads, axis=0), atol=1e-6)  # the head: over everyone


async def test_the_data_size_policy_gives_larger_sites_larger_ranks_within_their_own_cap() -> None:
    policy = RankPolicy(kind=RankPolicyKind.DATA_SIZE, examples_for_r_max=4000)
    examples = {"client-a": 300, "client-b": 1500, "client-c": 4000, "client-d": 9000}
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http,
            small_spec(r_max=8, rank_policy=policy),
            num_examples=examples,
            max_ranks={"client-d": 4},
        )
        plan = RoundPlan.model_validate_json((await cloud.http.post(f"/federations/{fed.fid}/start")).content)
        clients = [
            ClientInfo.model_validate(c)
            for c in (await cloud.http.get(f"/federations/{fed.fid}/clients")).json()
        ]

    # 8 * n / 4000 rounded down to a power of two: 0.6 -> 1, 3 -> 2, 8 -> 8, 18 -> 8 capped at d's own 4.
    expected = {"client-a": 1, "client-b": 2, "client-c": 8, "client-d": 4}
    assert plan.client_ranks == expected
    assert {c.client_id: c.rank for c in clients} == expected


async def test_clair_is_refused_under_encryption_or_with_central_noise() -> None:
    async with running_cloud() as cloud:
        encrypted = small_spec().model_dump(mode="json") | {"strategy": "clair"}
        noisy = small_spec(he={"kind": "none"}).model_dump(mode="json") | {
            "strategy": "clair",
            "central_dp": {"noise_multiplier": 1.0},
        }
        answers = [await cloud.http.post("/federations", json=body) for body in (encrypted, noisy)]
    assert [a.status_code for a in answers] == [422, 422]
    assert "per-client plaintext" in answers[0].json()["message"]
    assert "not a clipped sum" in answers[1].json()["message"]


async def test_clair_flags_the_contaminated_region_and_averages_the_others_in_the_shared_subspace() -> None:
    rng = np.random.default_rng(12)
    topology = {f"edge-{e}": (f"client-{e}a", f"client-{e}b") for e in range(1, 7)}
    spec = small_spec(strategy="clair", he={"kind": "none"})
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, topology)
        await fed.start(cloud.http)
        size = (await cloud.context.federations.layout(fed.fid))[0].size
        basis = np.linalg.qr(rng.normal(size=(size, 2)))[0]  # the shared 2-D subspace
        deltas: dict[str, dict[str, np.ndarray]] = {}
        for edge_id, clients in topology.items():
            deltas[edge_id] = {c: basis @ rng.normal(0, 0.05, 2) for c in clients}
        deltas["edge-6"] = {c: rng.normal(0, 0.05, size) for c in topology["edge-6"]}  # off the subspace
        for edge_id in topology:
            assert (
                await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            ).status_code == 202
        status = await cloud.status(fed.fid, 0)
        new = await cloud.vector(fed.fid, 1)

    assert status.flagged == ("edge-6",) and status.metrics["edges_flagged"] == 1.0
    benign = np.mean([d for e, ds in deltas.items() if e != "edge-6" for d in ds.values()], axis=0)
    everyone = np.mean([d for ds in deltas.values() for d in ds.values()], axis=0)
    assert np.linalg.norm(new - benign) < 1e-3 * np.linalg.norm(benign)
    assert np.linalg.norm(everyone - benign) > 0.1 * np.linalg.norm(benign)  # what plain FedAvg would do


@pytest.mark.parametrize("strategy", ["fedit", "fedrot"])
async def test_fedit_and_fedrot_start_from_the_seeded_a_and_average_both_factors(strategy: str) -> None:
    rng = np.random.default_rng(5)
    spec = small_spec(strategy=strategy)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        layout, in_features = await cloud.context.federations.layout(fed.fid)
        (module,) = [entry.name for entry in layout.lora]
        v0 = await cloud.vector(fed.fid, 0)
        deltas = {
            cid: rng.normal(0, 0.01, layout.size) for edge in fed.edges.values() for cid in edge.clients
        }
        for edge_id, edge in fed.edges.items():
            body = await fed.aggregate(cloud, edge_id, 0, {c: deltas[c] for c in edge.clients})
            assert (await fed.post(cloud.http, body)).status_code == 202
        v1 = await cloud.vector(fed.fid, 1)

    assert layout.trains_a and [e.name for e in layout.lora_a] == [module + ".lora_A"]
    a0 = layout.unflatten(v0)[module + ".lora_A"]
    basis = frozen_basis(seed=0, basis_version=0, module=module, r_max=2, in_features=in_features[module])
    np.testing.assert_allclose(a0, basis, atol=1e-7)  # LoRA's init: A random (seeded), B zero
    assert not layout.unflatten(v0)[module].any()
    np.testing.assert_allclose(v1, v0 + np.mean(list(deltas.values()), axis=0), atol=1e-6)


async def test_ranks_grow_while_the_highest_column_of_the_global_update_is_in_full_use() -> None:
    rng = np.random.default_rng(13)
    policy = RankPolicy(kind=RankPolicyKind.DATA_SIZE, examples_for_r_max=4000, grow_energy=0.5)
    spec = small_spec(r_max=4, rank_policy=policy, rounds=4)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, max_ranks={"client-d": 1})  # 100 examples: rank 1
        plan = await fed.start(cloud.http)
        assert set(plan.client_ranks.values()) == {1}
        layout, _ = await cloud.context.federations.layout(fed.fid)
        (module,) = [entry.name for entry in layout.lora]

        async def round_with(round_: int, columns: int) -> RoundPlan:
            """Every client moves only the first `columns` columns of B (and the head)."""
            deltas = {}
            for cid in RANKS:
                tensors = {e.name: rng.normal(0, 0.01, e.shape) for e in layout.head}
                tensors[module] = np.zeros(layout.lora[0].shape)
                tensors[module][:, :columns] = rng.normal(0, 0.01, (layout.lora[0].shape[0], columns))
                deltas[cid] = layout.flatten(tensors).astype(np.float64)
            for edge_id, edge in fed.edges.items():
                body = await fed.aggregate(
                    cloud, edge_id, round_, {c: deltas[c] for c in edge.clients}, ranks=plan.client_ranks
                )
                assert (await fed.post(cloud.http, body)).status_code == 202
            response = await cloud.http.get(f"/federations/{fed.fid}/plan")
            return RoundPlan.model_validate_json(response.content)

        plan = await round_with(0, columns=1)  # rank 1 fully used: double, but client-d is capped at 1
        assert plan.client_ranks == {"client-a": 2, "client-b": 2, "client-c": 2, "client-d": 1}
        plan = await round_with(1, columns=1)  # column 1 unused by everyone: no growth
        assert plan.client_ranks == {"client-a": 2, "client-b": 2, "client-c": 2, "client-d": 1}
        plan = await round_with(2, columns=2)  # both columns in use: 2 -> 4 (r_max)
        assert plan.client_ranks == {"client-a": 4, "client-b": 4, "client-c": 4, "client-d": 1}
        listed = (await cloud.http.get(f"/federations/{fed.fid}/clients")).json()
        assert {c["client_id"]: c["rank"] for c in listed} == plan.client_ranks


def test_clair_falls_back_to_the_plain_mean_when_it_cannot_tell_rows_apart() -> None:
    rng = np.random.default_rng(14)
    previous = np.zeros(50)
    two = [EdgeRow("edge-1", rng.normal(size=50) * 2, 2.0), EdgeRow("edge-2", rng.normal(size=50), 1.0)]
    vector, flagged = ClairStrategy().combine_rows(previous, two)
    np.testing.assert_allclose(vector, (two[0].vector + two[1].vector) / 3.0)
    assert flagged == ()
    # Three rows as far from each other as from their common part: the shared subspace is all three
    # (checked below with protocol.clair directly), so nobody is singled out and the mean inside it is the
    # plain mean.
    common = rng.normal(size=5000)
    rows = [EdgeRow(f"edge-{i}", common + rng.normal(size=5000), 1.0) for i in range(3)]
    assert decompose(np.stack([r.vector for r in rows])).subspace.shape == (5000, 3)
    vector, flagged = ClairStrategy().combine_rows(np.zeros(5000), rows)
    assert flagged == ()
    np.testing.assert_allclose(vector, np.mean([r.vector for r in rows], axis=0))
    # Nothing shared at all (a tiny lam moves every row to the sparse part): no subspace, no shared update;
    # the strategy catches this error and applies the plain mean.
    with pytest.raises(ClairError, match="no shared subspace"):
        decompose(np.stack([r.vector for r in rows]), lam=1e-3).shared_update()
