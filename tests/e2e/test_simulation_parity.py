"""The one-process simulation computes what the services compute: the same hospitals' deltas, sealed by the
agent's `make_update`, summed by the edge's fold and closed by the in-process cloud (`tests.cloud.harness`),
give the global vector the simulation gives.

The simulation runs on the tiny encoder with `insecure_reproducible`, so its noise shares come from the seed;
the services' hospitals are handed the same generators (`make_update(rng=...)`, as tests may), which makes
the comparison exact up to CKKS' own rounding.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import numpy as np
import pytest

from client_agent.train import LocalResult
from edge_aggregator.fold import fold, parse_upload
from fedlora import simulation
from fedlora.simulation import SHARE_STREAM, SimulationConfig, federation_spec, hospital_names, simulate
from protocol.crypto import CKKSParams
from protocol.messages import FederationSpec
from services.model_layout import federation_layout
from tests.cloud.harness import Federation, running_cloud
from tests.hospitals import hospital_agent

CKKS_TOLERANCE = 1e-5  # four encrypted deltas summed, decrypted, averaged and stored as float32
SEED = 3


def _config(tmp_path: Path, model_dir: Path, **overrides: object) -> SimulationConfig:
    values: dict[str, object] = {
        "hospitals": 4,
        "edges": 2,
        "partition": "iid",
        "rounds": 1,
        "steps": 4,
        "batch_size": 16,
        "max_train_examples": 240,
        "max_test_examples": 32,
        "epsilon": None,
        "scheme": "ckks",
        "target_modules": ("query", "value"),
        "layers_to_transform": (1,),
        "rank": 2,
        "threads": 1,
        "deidentify": False,
        "model_path": model_dir,
        "out_dir": tmp_path / "simulation",
        "seed": SEED,
        # A clip norm under the deltas' norms, so that every delta is clipped.
        "clip_norm": 0.05,
        "insecure_reproducible": True,
    }
    return SimulationConfig(**(values | overrides))  # type: ignore[arg-type]


def _simulated(
    config: SimulationConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each hospital's trained delta (in the hospitals' order) and the global vector after round 0."""
    deltas: list[np.ndarray] = []
    trained = simulation.local_update

    def recorded(*args: object, **kwargs: object) -> LocalResult:
        result = trained(*args, **kwargs)  # type: ignore[arg-type]
        deltas.append(result.delta.copy())
        return result

    monkeypatch.setattr(simulation, "local_update", recorded)
    vectors: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate(config, on_global=lambda _, vector: vectors.append(vector))
    return deltas, vectors[0]


async def _through_the_services(
    spec: FederationSpec, deltas: list[np.ndarray], *, model_dir: Path, tmp_path: Path, edges: int
) -> np.ndarray:
    """Round 0 of `spec` with these deltas: each hospital's `ClientAgent.make_update` under the cloud's plan,
    each edge's sum folded by the edge's own function and forwarded, the cloud's close."""
    names = hospital_names(len(deltas))
    edge_of = {name: f"edge-{index % edges + 1}" for index, name in enumerate(names)}
    topology = {edge: tuple(n for n in names if edge_of[n] == edge) for edge in sorted(set(edge_of.values()))}
    async with running_cloud(model_path=model_dir) as cloud:
        fed = await Federation.create(cloud.http, spec, topology)
        plan = await fed.start(cloud.http)
        length = deltas[0].size
        sums: dict[str, bytes] = {}
        for index, (name, delta) in enumerate(zip(names, deltas, strict=True)):
            agent = hospital_agent(
                tmp_path, state=name, client_id=name, federation_id=fed.fid, edge_id=edge_of[name]
            )
            update = agent.make_update(
                plan,
                fed.scheme,
                delta,
                num_examples=100,
                spend=None,
                rng=np.random.default_rng([SEED, 0, index, SHARE_STREAM]),
            )
            incoming = parse_upload(fed.scheme, update.ciphertext, length=length)
            sums[edge_of[name]] = fold(fed.scheme, sums.get(edge_of[name]), incoming, length=length)
        for edge, clients in topology.items():
            aggregate = await fed.aggregate(
                cloud,
                edge,
                0,
                {cid: np.zeros(length) for cid in clients},
                ciphertext=sums[edge],
                local_epsilon=None,
                noise_share_std=plan.noise_share.std if plan.noise_share is not None else None,
            )
            response = await fed.post(cloud.http, aggregate)
            assert response.status_code == 202, response.text
        return await cloud.vector(fed.fid, 1)


@pytest.mark.parametrize(
    ("strategy", "noise"),
    [("ffa", {"central_noise": 0.5, "distributed_noise": True}), ("fedit", {})],
    ids=["ffa-distributed-noise", "fedit-no-noise"],
)
def test_the_simulation_and_the_services_give_the_same_global_vector(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    noise: dict[str, object],
) -> None:
    # Prepare: the simulation's run, and the deltas its hospitals trained.
    config = _config(tmp_path, tiny_model_dir, strategy=strategy, **noise)
    deltas, simulated = _simulated(config, monkeypatch)
    spec = federation_spec(config, num_labels=2)
    assert isinstance(spec.he, CKKSParams) and len(deltas) == 4
    assert min(float(np.linalg.norm(d)) for d in deltas) > config.clip_norm  # type: ignore[operator]

    # Execute: the same deltas through the agent, the edge and the cloud.
    served = asyncio.run(
        _through_the_services(spec, deltas, model_dir=tiny_model_dir, tmp_path=tmp_path, edges=config.edges)
    )

    # Assert: one global vector; the round moved it by far more than the tolerance.
    assert served.shape == simulated.shape
    np.testing.assert_allclose(served, simulated, rtol=0, atol=CKKS_TOLERANCE)
    start = spec_start(spec, tiny_model_dir)
    assert np.abs(simulated - start).max() > 100 * CKKS_TOLERANCE


def spec_start(spec: FederationSpec, model_dir: Path) -> np.ndarray:
    """Adapter version 0 as the cloud makes it."""
    layout, _ = federation_layout(spec, model_dir)
    return layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version).astype(np.float64)
