"""Seed 001's third stage: at the first convergence the cloud re-bases the global adapter to a common lower
rank by SVD of each module's B A, broadcasts the new A rows as a new basis version, and goes on."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import peft
import pytest
from safetensors.numpy import load as load_safetensors
from transformers import AutoConfig, PreTrainedModel

from client_agent.export import export_adapter
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path
from fedlora.launcher import adapter_basis
from protocol.ffa import AdapterLayout, basis_from_bytes, frozen_basis
from protocol.messages import (
    AdapterVersion,
    ConvergenceConfig,
    FederationInfo,
    FederationSpec,
    FederationState,
    RankPolicy,
    RoundPlan,
)
from services import keyspace
from services.identity import verify
from tests.cloud.harness import Cloud, Federation, bearer, running_cloud, small_spec
from tests.models import encoder_from_config

pytestmark = pytest.mark.anyio
CLIENTS = ("client-a", "client-b", "client-c", "client-d")


def losses(value: float) -> dict[str, tuple[float, int]]:
    return dict.fromkeys(CLIENTS, (value, 10))


def rebasing_spec() -> FederationSpec:
    """r_max 2, re-based to rank 1 once the loss moves less than 0.01 for one round."""
    return small_spec(
        rounds=10,
        rank_policy=RankPolicy(rebase_rank=1),
        convergence=ConvergenceConfig(min_delta=0.01, patience=1),
    )


@asynccontextmanager
async def started(spec: FederationSpec) -> AsyncIterator[tuple[Cloud, Federation]]:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        yield cloud, fed


async def run_round(
    cloud: Cloud,
    fed: Federation,
    rng: np.random.Generator,
    round_: int,
    loss: float,
    *,
    scale: float,
    rebased: bool,
) -> None:
    """Both edges forward `round_` with every hospital reporting `loss`: in basis 1 at rank 1 once `rebased`."""
    deltas = fed.deltas(rng, scale=scale)
    extra: dict[str, Any] = {"ranks": dict.fromkeys(CLIENTS, 1), "basis_version": 1} if rebased else {}
    for edge_id in ("edge-1", "edge-2"):
        body = await fed.aggregate(cloud, edge_id, round_, deltas[edge_id], validation=losses(loss), **extra)
        assert (await fed.post(cloud.http, body)).status_code == 202


async def test_convergence_rebases_to_a_common_rank_and_the_federation_goes_on_in_the_new_basis() -> None:
    # Prepare: r_max 2, re-based to rank 1 once the loss settles (rebasing_spec).
    rng, spec = np.random.default_rng(8), rebasing_spec()
    async with started(spec) as (cloud, fed):
        layout, in_features = await cloud.context.federations.layout(fed.fid)

        # Execute: rounds 0 and 1 settle the loss (0.70 -> 0.695).
        for round_, loss in enumerate((0.70, 0.695)):
            await run_round(cloud, fed, rng, round_, loss, scale=0.1, rebased=False)
        status = await cloud.status(fed.fid, 1)
        plan = RoundPlan.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}/plan")).content)
        before = await cloud.vector(fed.fid, 2)
        after = await cloud.vector(fed.fid, 3)
        basis_raw = (await cloud.http.get(f"/federations/{fed.fid}/basis/1")).content
        seeded_raw = (await cloud.http.get(f"/federations/{fed.fid}/basis/0")).content
        missing = await cloud.http.get(f"/federations/{fed.fid}/basis/7")
        zipped = (await cloud.http.get(f"/federations/{fed.fid}/adapters/3")).content
        # Round 2 in the new basis: an aggregate still in basis 0 is refused, one in basis 1 is taken.
        deltas = fed.deltas(rng)
        ranks = dict.fromkeys(CLIENTS, 1)
        stale = await fed.aggregate(cloud, "edge-1", 2, deltas["edge-1"], basis_version=0, ranks=ranks)
        refused = await fed.post(cloud.http, stale)
        for round_, loss in ((2, 0.60), (3, 0.598)):
            await run_round(cloud, fed, rng, round_, loss, scale=0.01, rebased=True)
        info = FederationInfo.model_validate_json((await cloud.http.get(f"/federations/{fed.fid}")).content)

    # Assert: the new B A is the best rank-1 approximation of the old one, module by module, and the
    # truncation error is the discarded singular value (numpy's SVD, not the cloud's code).
    old_t, new_t = layout.unflatten(before), layout.unflatten(after)
    new_bases = basis_from_bytes(basis_raw, layout, in_features)
    errors = []
    for entry in layout.lora:
        a0 = frozen_basis(
            seed=spec.seed, basis_version=0, module=entry.name, r_max=2, in_features=in_features[entry.name]
        ).astype(np.float64)
        product = old_t[entry.name] @ a0
        u, sigma, vt = np.linalg.svd(product)
        best = sigma[0] * np.outer(u[:, 0], vt[0])
        rebased = new_t[entry.name][:, :1] @ new_bases[entry.name][:1].astype(np.float64)
        np.testing.assert_allclose(rebased, best, atol=1e-5)
        assert np.all(new_t[entry.name][:, 1:] == 0)
        assert np.linalg.norm(product - rebased) == pytest.approx(sigma[1], rel=1e-3)
        errors.append(sigma[1])
        np.testing.assert_array_equal(new_bases[entry.name][1:], a0[1:].astype(np.float32))
    np.testing.assert_allclose(after[layout.size - 4 :], before[layout.size - 4 :])  # the head is unchanged
    assert status.rebased is not None
    assert (status.rebased.basis_version, status.rebased.adapter_version, status.rebased.rank) == (1, 3, 1)
    assert status.rebased.truncation_error == pytest.approx(
        float(np.sqrt(np.sum(np.square(errors)))), rel=1e-3
    )
    assert status.stop_reason is None
    assert (plan.round, plan.basis_version, plan.adapter_version) == (2, 1, 3)
    # The plan in the new basis names the bytes the cloud serves for it, signed with the federation's key.
    assert plan.basis_sha256 == hashlib.sha256(basis_raw).hexdigest()
    assert plan.vector_sha256 == hashlib.sha256(after.astype("<f4").tobytes()).hexdigest()
    assert info.plan_public_key is not None
    verify(info.plan_public_key, plan.signing_payload(), plan.signature)
    assert set(plan.client_ranks.values()) == {1}
    assert seeded_raw == b"".join(
        frozen_basis(seed=spec.seed, basis_version=0, module=e.name, r_max=2, in_features=in_features[e.name])
        .astype("<f4")
        .tobytes()
        for e in layout.lora
    )
    assert missing.status_code == 404
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        weights = load_safetensors(archive.read("adapter_model.safetensors"))
    exported = {k: v for k, v in weights.items() if k.endswith("lora_A.weight")}
    assert len(exported) == len(layout.lora)
    for name, value in exported.items():
        module = next(e.name for e in layout.lora if name.endswith(f"{e.name}.lora_A.weight"))
        np.testing.assert_array_equal(value, new_bases[module])
    assert refused.status_code == 409 and refused.json()["code"] == "wrong_basis"
    # The loss settles again in the new basis: this time the federation completes.
    assert info.state is FederationState.COMPLETED and info.reason is not None and "converged" in info.reason


def tiny_encoder() -> PreTrainedModel:
    """MiniLM's architecture with a tiny vocabulary and feed-forward width, randomly initialised: its LoRA
    modules have the shapes of the federation's layout, so stock peft loads every exported adapter onto it."""
    config = AutoConfig.from_pretrained(default_model_path())
    config.vocab_size, config.intermediate_size = 64, 32
    return encoder_from_config(config)


def peft_error(
    folder: Path,
    spec: FederationSpec,
    layout: AdapterLayout,
    vector: np.ndarray,
    bases: Mapping[str, np.ndarray],
) -> float:
    """The largest relative difference, over the LoRA modules, between the `delta W` stock peft computes for
    the adapter in `folder` and the cloud's `B A * alpha / r_max` (`B` from `vector`, `A` from `bases`); 0
    for the zero adapter, whose peft `delta W` must be zero too."""
    loaded = peft.PeftModel.from_pretrained(tiny_encoder(), str(folder))
    b_of = layout.unflatten(vector)
    worst = 0.0
    for entry in layout.lora:
        module = loaded.get_submodule(f"base_model.model.{entry.name}")
        peft_delta = module.get_delta_weight("default").detach().double().numpy()
        expected = b_of[entry.name] @ bases[entry.name].astype(np.float64) * (spec.lora_alpha / spec.r_max)
        if not expected.any():  # version 0: B is zero
            np.testing.assert_array_equal(peft_delta, 0.0)
            continue
        worst = max(worst, float(np.linalg.norm(peft_delta - expected) / np.linalg.norm(expected)))
    return worst


def unzipped(raw: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        archive.extractall(folder)
    return folder


async def test_every_version_exports_the_basis_it_was_trained_in_and_peft_computes_the_cloud_s_delta_w(
    tmp_path: Path,
) -> None:
    """Issue 19, item 7: each `AdapterVersion` records its basis, and every export of every version, loaded by
    stock `peft` on a randomly initialised encoder, gives `delta W = B A * alpha / r_max` with `B` from the
    version's vector and `A` from the basis it was trained in: versions 0-2 in the seeded basis 0, 3 (the
    re-base) and the two rounds after it (4, 5) in the broadcast basis 1. The exports are those hospitals
    and admins use: the cloud's zip, fetched with the admin token and with a hospital's, and the hospital's
    own `export_adapter` from its model in the basis its plan trained in (installed as the agent does)."""
    # Prepare: the same federation as above; it re-bases after round 1 and runs rounds 2 and 3 in basis 1.
    rng, spec = np.random.default_rng(8), rebasing_spec()
    async with started(spec) as (cloud, fed):
        layout, in_features = await cloud.context.federations.layout(fed.fid)
        for round_, loss in ((0, 0.70), (1, 0.695), (2, 0.60), (3, 0.598)):
            await run_round(cloud, fed, rng, round_, loss, scale=0.1, rebased=round_ >= 2)

        # Execute: export every version through the endpoint, and read what the cloud holds for it.
        listed = [
            AdapterVersion.model_validate(v)
            for v in (await cloud.http.get(f"/federations/{fed.fid}/adapters")).json()
        ]
        vectors = {v: await cloud.vector(fed.fid, v) for v in range(6)}
        zips = {v: (await cloud.http.get(f"/federations/{fed.fid}/adapters/{v}")).content for v in range(6)}
        as_hospital = bearer(fed.client_tokens["client-a"])
        hospital_zips = {}
        for version in range(6):
            response = await cloud.http.get(f"/federations/{fed.fid}/adapters/{version}", headers=as_hospital)
            assert response.status_code == 200, response.text
            hospital_zips[version] = response.content
        served = {b: (await cloud.http.get(f"/federations/{fed.fid}/basis/{b}")).content for b in (0, 1)}
        # The launcher's evaluator fetches the basis each version was trained in (None: the seeded one).
        evaluator_bases = {v: await adapter_basis(cloud.http, fed.fid, v, seeded=0) for v in range(6)}
        # Versions stored before they recorded a basis (only the re-base's did) export the same adapter: the
        # basis of the nearest earlier version that records one, else the seeded basis.
        for version in (0, 1, 2, 4, 5):
            key = keyspace.fed_adapter_meta(fed.fid, version)
            stored = json.loads(await cloud.store.get(key) or b"{}")
            await cloud.store.set(
                key, json.dumps({k: v for k, v in stored.items() if k != "basis_version"}).encode()
            )
        legacy = {v: (await cloud.http.get(f"/federations/{fed.fid}/adapters/{v}")).content for v in range(6)}
    bases = {b: basis_from_bytes(raw, layout, in_features) for b, raw in served.items()}
    trained_in = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    # The hospital's own export: its model at the plan's rank (2, then 1 after the re-base), holding the
    # seeded basis until a plan names basis 1, which the agent then fetches and installs.
    exported = {}
    for version, basis in trained_in.items():
        model = FFAClassifier(tiny_encoder(), AdapterSpec.from_federation(spec), rank=2 - basis)
        if basis:
            model.install_basis(bases[basis])
        folder = tmp_path / f"hospital-v{version}"
        exported[version] = export_adapter(model, vectors[version], folder, base_model=spec.base_model)

    # Assert: the listing names each version's basis, and stock peft's delta W is the cloud's B A * scale
    # for every version and every export path.
    errors = {
        (path, v): peft_error(folder, spec, layout, vectors[v], bases[trained_in[v]])
        for path, folders in (
            ("admin", {v: unzipped(raw, tmp_path / f"admin-v{v}") for v, raw in zips.items()}),
            ("hospital", {v: unzipped(raw, tmp_path / f"client-v{v}") for v, raw in hospital_zips.items()}),
            ("hospital-export", exported),
        )
        for v, folder in folders.items()
    }
    assert len(errors) == 18 and all(error < 1e-5 for error in errors.values()), sorted(errors.items())
    # The check tells the bases apart: the re-based versions' delta W in the seeded basis is another one.
    assert all(
        peft_error(tmp_path / f"admin-v{v}", spec, layout, vectors[v], bases[0]) > 0.5 for v in (3, 4, 5)
    )
    assert {v.version: v.basis_version for v in listed} == trained_in
    assert evaluator_bases == {0: None, 1: None, 2: None, 3: served[1], 4: served[1], 5: served[1]}
    for version, raw in legacy.items():
        with (
            zipfile.ZipFile(io.BytesIO(raw)) as archive,
            zipfile.ZipFile(io.BytesIO(zips[version])) as recorded,
        ):
            assert archive.read("adapter_model.safetensors") == recorded.read("adapter_model.safetensors")


def test_the_spec_refuses_a_rebase_rank_it_cannot_honour() -> None:
    from pydantic import ValidationError

    from protocol.messages import Strategy

    convergence = ConvergenceConfig(min_delta=0.01)
    with pytest.raises(ValidationError, match="rebase_rank must be at most r_max=2, got 4"):
        small_spec(rank_policy=RankPolicy(rebase_rank=4), convergence=convergence)
    with pytest.raises(ValidationError, match="set `convergence` too"):
        small_spec(rank_policy=RankPolicy(rebase_rank=1))
    with pytest.raises(ValidationError, match="needs strategy 'ffa'"):
        small_spec(rank_policy=RankPolicy(rebase_rank=1), convergence=convergence, strategy=Strategy.FEDIT)
