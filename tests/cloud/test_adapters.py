"""The adapter registry: raw vectors and PEFT adapter zips."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from transformers import AutoTokenizer, ErnieConfig, ErnieModel

from client_agent.model import AdapterSpec, default_model_path, load_encoder
from protocol.ffa import frozen_basis
from tests.cloud.harness import Federation, bearer, running_cloud, small_spec
from tests.models import global_model_at_rmax
from tests.stock_pipeline import assert_same_scores, project_probabilities, run_stock_loader

pytestmark = pytest.mark.anyio
MODULE = "encoder.layer.5.attention.self.value"


async def test_the_peft_zip_holds_the_global_b_and_the_shared_basis() -> None:
    rng = np.random.default_rng(31)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            assert (
                await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            ).status_code == 202
        vector = await cloud.vector(fed.fid, 1)

        response = await cloud.http.get(
            f"/federations/{fed.fid}/adapters/1", headers=bearer(fed.client_tokens["client-a"])
        )

        assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(archive.namelist())
        config = json.loads(archive.read("adapter_config.json"))
        assert config["base_model_name_or_path"] == fed.spec.base_model
        assert (
            config["r"] == 2
            and config["target_modules"] == ["value"]
            and config["layers_to_transform"] == [5]
        )
        weights = load_safetensors(archive.read("adapter_model.safetensors"))
        # The B matrix is the first 384 x 2 block of the vector (the layout puts LoRA B before the head).
        expected_b = vector[: 384 * 2].reshape(384, 2).astype(np.float32)
        assert np.array_equal(weights[f"base_model.model.{MODULE}.lora_B.weight"], expected_b)
        a_max = frozen_basis(seed=0, basis_version=0, module=MODULE, r_max=2, in_features=384)
        assert np.array_equal(weights[f"base_model.model.{MODULE}.lora_A.weight"], a_max)


async def test_vectors_and_versions_need_an_admin_or_a_client_and_an_existing_version() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        url = f"/federations/{fed.fid}/adapters"
        edge = bearer(fed.edges["edge-1"].token)
        client = bearer(fed.client_tokens["client-a"])

        assert (await cloud.http.get(f"{url}/0/vector", headers=client)).status_code == 200
        assert (await cloud.http.get(f"{url}/0/vector", headers=edge)).status_code == 403
        assert (await cloud.http.get(f"{url}/0/vector", headers={"Authorization": ""})).status_code == 401
        assert (await cloud.http.get(f"{url}/0", headers=edge)).status_code == 403
        assert (await cloud.http.get(url, headers=edge)).status_code == 403
        missing = await cloud.http.get(f"{url}/5/vector")
        assert missing.status_code == 404 and missing.json()["field"] == "version"
        assert [v["version"] for v in (await cloud.http.get(url)).json()] == [0]


@pytest.mark.slow
# The zip is built from the stored vector alone: one store is enough for the slow part.
@pytest.mark.parametrize("state_store", ["memory"], indirect=True)
async def test_the_zip_the_demo_downloads_runs_in_a_stock_pipeline(tmp_path, state_store) -> None:
    """Issue 24, item 4: the cloud's zip (what `make demo` unpacks into runs/demo/adapter), unzipped, runs in
    `pipeline("text-classification")` through the README's snippet with stock `transformers` + `peft`, and
    gives the project's own probabilities for the same version on the cloud's base model (MiniLM)."""
    rng = np.random.default_rng(32)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng, scale=0.5)  # large enough that the head moves the scores off uniform
        for edge_id in ("edge-1", "edge-2"):
            assert (
                await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            ).status_code == 202
        vector = await cloud.vector(fed.fid, 1)
        response = await cloud.http.get(f"/federations/{fed.fid}/adapters/1")
    assert response.status_code == 200
    folder = tmp_path / "adapter"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(folder)
    assert {"config.json", "modeling_fedlora.py"} <= {path.name for path in folder.iterdir()}
    base = default_model_path()
    labels = [f"LABEL_{i}" for i in range(fed.spec.num_labels)]
    ours = global_model_at_rmax(load_encoder(base), AdapterSpec.from_federation(fed.spec), vector)

    stock = run_stock_loader(folder, base, tmp_path)

    assert_same_scores(
        stock, project_probabilities(ours, AutoTokenizer.from_pretrained(base), labels), labels
    )


@pytest.mark.parametrize("state_store", ["memory"], indirect=True)
async def test_a_base_model_the_shipped_classifier_cannot_wrap_is_refused_by_name(
    tmp_path, state_store
) -> None:
    """An encoder the layout accepts but `modeling_fedlora.py` has no class for (ERNIE): the zip is a 422
    naming `base_model` and the model type, and the raw vector is still served."""
    base = tmp_path / "tiny-ernie"
    ErnieModel(
        ErnieConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(base)
    async with running_cloud(model_path=base) as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        refused = await cloud.http.get(f"/federations/{fed.fid}/adapters/0")
        vector = await cloud.http.get(f"/federations/{fed.fid}/adapters/0/vector")

    assert refused.status_code == 422
    body = refused.json()
    assert body["code"] == "invalid_request" and body["field"] == "base_model"
    assert "got 'ernie'" in body["message"]
    assert vector.status_code == 200
