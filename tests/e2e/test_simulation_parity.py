"""The one-process simulation computes what the services compute: the same hospitals, trained by the agent's
own round (`ClientAgent._train`: local training, then the strategy's `prepare_delta`) and sealed by its
`make_update`, uploaded to real `EdgeAggregator`s (their checks, their store, their running sum) that
forward to the in-process cloud (`tests.cloud.harness`), give the global vectors the simulation gives, round
after round.

The simulation runs on the tiny encoder with `insecure_reproducible`, so its hospitals' batches and noise
shares come from the seed; the agents are handed the same draws through the one derivation both use
(`fedlora.simulation_rounds.training_seed` and `share_sampler`), which makes the comparison exact up to
CKKS' own rounding. Every case runs at least two rounds, the later ones from the adapter the cloud published;
FedRot runs three, since its alignment keeps the identity in round 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from client_agent import tasks
from client_agent.releases import PublicCounts
from client_agent.train import Features, LocalResult
from edge_aggregator.ledger import ForwardStatus
from fedlora import simulation_hospitals
from fedlora.simulation import SimulationConfig, federation_spec, hospital_names, simulate
from fedlora.simulation_rounds import share_sampler, training_seed
from protocol.crypto import CKKSParams, scheme_from_public
from protocol.messages import ClientEnrolment, FederationCreated, FederationSpec, Role
from services.model_layout import federation_layout
from tests.cloud.harness import edge_core, issue_enrolment_token, post_enrolment, running_cloud
from tests.hospitals import hospital_agent

CKKS_TOLERANCE = 1e-5  # four encrypted deltas summed, decrypted, averaged and stored as float32
SEED = 3
ROUNDS = 2


def _config(tmp_path: Path, model_dir: Path, **overrides: object) -> SimulationConfig:
    values: dict[str, object] = {
        "hospitals": 4,
        "edges": 2,
        "partition": "iid",
        "rounds": ROUNDS,
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


@dataclass(frozen=True)
class Hospital:
    """What a simulated hospital holds before its first round: its encoded examples and released count."""

    features: Features
    public_examples: int


@dataclass(frozen=True)
class Simulated:
    hospitals: list[Hospital]  # in the hospitals' order
    vectors: list[np.ndarray]  # the global vector after each round
    delta_norms: list[float]  # of each delta the hospitals upload, before clipping
    hooked: dict[int, float]  # per round, the most the strategy's `prepare_delta` moved a delta's coordinate


def _simulated(config: SimulationConfig, monkeypatch: pytest.MonkeyPatch) -> Simulated:
    """Run the simulation, noting each hospital's data and count as it trains in round 0, and what the
    strategy's client-side hook did to every delta."""
    hospitals: list[Hospital] = []
    norms: list[float] = []
    hooked: dict[int, float] = {}
    raw: list[np.ndarray] = []
    # Local training as the classification task runs it (`client_agent.tasks`), the agent and the simulation alike.
    trained, prepared = tasks.train_local, simulation_hospitals.local_update

    def train_noted(*args: object, **kwargs: object) -> LocalResult:
        result = trained(*args, **kwargs)  # type: ignore[arg-type]
        raw.append(result.delta.copy())
        return result

    def prepared_noted(*args: object, **kwargs: object) -> LocalResult:
        result = prepared(*args, **kwargs)  # type: ignore[arg-type]
        round_ = int(kwargs["round_"])  # type: ignore[call-overload]
        if round_ == 0:
            hospitals.append(Hospital(args[1], kwargs["public_examples"]))  # type: ignore[arg-type]
        norms.append(float(np.linalg.norm(result.delta)))
        hooked[round_] = max(hooked.get(round_, 0.0), float(np.abs(result.delta - raw.pop()).max()))
        return result

    monkeypatch.setattr(tasks, "train_local", train_noted)
    monkeypatch.setattr(simulation_hospitals, "local_update", prepared_noted)
    vectors: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulate(config, on_global=lambda _, vector: vectors.append(vector))
    return Simulated(hospitals, vectors, norms, hooked)


async def _through_the_services(
    spec: FederationSpec,
    hospitals: Sequence[Hospital],
    *,
    rounds: int,
    edges: int,
    model_dir: Path,
    tmp_path: Path,
) -> list[np.ndarray]:
    """`rounds` rounds of `spec`: each hospital's agent trains from the cloud's adapter (`_train`) and makes
    its update (`make_update`), its edge's `EdgeAggregator` accepts it and forwards the round's sum once
    every client is in, the cloud closes. Returns the global vector after each round."""
    names = hospital_names(len(hospitals))
    edge_of = {name: f"edge-{index % edges + 1}" for index, name in enumerate(names)}
    fid = spec.federation_id
    async with running_cloud(model_path=model_dir) as cloud, contextlib.AsyncExitStack() as stack:
        response = await cloud.http.post("/federations", json=spec.model_dump(mode="json"))
        assert response.status_code == 201, response.text
        created = FederationCreated.model_validate_json(response.content)
        aggregators = {
            edge: await stack.enter_async_context(edge_core(cloud, created, edge))
            for edge in sorted(set(edge_of.values()))
        }
        agents = [
            hospital_agent(
                tmp_path,
                state=name,
                model_path=model_dir,
                client_id=name,
                federation_id=fid,
                edge_id=edge_of[name],
            )
            for name in names
        ]
        for agent, hospital in zip(agents, hospitals, strict=True):
            enrolment = ClientEnrolment(
                client_id=agent.settings.client_id,
                edge_id=agent.settings.edge_id,
                public_key=agent.key.public_bytes,
                num_examples=hospital.public_examples,
            )
            token = await issue_enrolment_token(cloud.http, fid, Role.CLIENT, agent.settings.client_id)
            response = await post_enrolment(cloud.http, fid, enrolment, agent.key, token=token)
            assert response.status_code == 201, response.text
        response = await cloud.http.post(f"/federations/{fid}/start")
        assert response.status_code == 200, response.text
        scheme = scheme_from_public(
            spec.he, (await cloud.http.get(f"/federations/{fid}/public-context")).content
        )
        vectors = []
        for round_ in range(rounds):
            for edge in aggregators.values():
                assert await edge.refresh_plan()
            # Each hospital trains under its edge's view of the round's plan.
            views = {edge_id: edge.plan for edge_id, edge in aggregators.items() if edge.plan is not None}
            assert len(views) == len(aggregators) and {v.round for v in views.values()} == {round_}
            adapter_version = views[edge_of[names[0]]].adapter_version
            start = (await cloud.vector(fid, adapter_version)).astype(np.float32)
            for index, (agent, hospital) in enumerate(zip(agents, hospitals, strict=True)):
                name = agent.settings.client_id
                plan = views[edge_of[name]]
                model = agent._build_model(spec, plan.client_ranks[name])
                public = PublicCounts.derive(hospital.public_examples, plan.validation_fraction)
                result = agent._train(
                    model,
                    hospital.features,
                    start,
                    plan,
                    spec,
                    public,
                    insecure_seed=training_seed(spec.seed, round_=round_, hospital=index),
                )
                update = agent.make_update(
                    plan,
                    scheme,
                    result.delta,
                    num_examples=public.train,
                    spend=None,
                    sampler=share_sampler(spec.seed, round_=round_, hospital=index),
                    layout=model.layout,
                )
                await aggregators[edge_of[name]].accept(update, federation_id=fid, round_=round_)
            for edge in aggregators.values():
                outcome = await edge.maybe_forward(round_)
                assert outcome is not None and outcome.status is ForwardStatus.DELIVERED, outcome
            vectors.append(await cloud.vector(fid, round_ + 1))
        return vectors


@pytest.mark.parametrize(
    ("strategy", "noise"),
    [
        ("ffa", {"central_noise": 0.5, "distributed_noise": True}),
        ("fedit", {}),
        # FedRot aligns A from round 1 and B from round 2 (round 0 keeps the identity), and a clipped update
        # leaves little to align: three rounds, a clip norm over the deltas, longer steps.
        (
            "fedrot",
            {
                "central_noise": 0.5,
                "distributed_noise": True,
                "clip_norm": 0.5,
                "learning_rate": 4.0,
                "steps": 8,
                "rounds": 3,
            },
        ),
    ],
    ids=["ffa-distributed-noise", "fedit-no-noise", "fedrot-distributed-noise"],
)
def test_the_simulation_and_the_services_give_the_same_global_vector(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    noise: dict[str, object],
) -> None:
    # Prepare: the simulation's run, and the hospitals it trained.
    config = _config(tmp_path, tiny_model_dir, strategy=strategy, **noise)
    simulated = _simulated(config, monkeypatch)
    spec = federation_spec(config, num_labels=2)
    assert isinstance(spec.he, CKKSParams) and len(simulated.hospitals) == 4
    if strategy == "fedrot":
        # The alignment is the identity in round 0 only: the later rounds compare it.
        assert simulated.hooked[0] == 0 and min(simulated.hooked[r] for r in (1, 2)) > 10 * CKKS_TOLERANCE
    else:
        assert min(simulated.delta_norms) > config.clip_norm  # type: ignore[operator]

    # Execute: the same hospitals through the agent, the edges and the cloud.
    served = asyncio.run(
        _through_the_services(
            spec,
            simulated.hospitals,
            rounds=config.rounds,
            edges=config.edges,
            model_dir=tiny_model_dir,
            tmp_path=tmp_path,
        )
    )

    # Assert: the same global vector after every round; each round moved it by far more than the tolerance.
    previous = spec_start(spec, tiny_model_dir)
    for round_, (vector, expected) in enumerate(zip(served, simulated.vectors, strict=True)):
        assert vector.shape == expected.shape
        np.testing.assert_allclose(vector, expected, rtol=0, atol=CKKS_TOLERANCE, err_msg=f"round {round_}")
        assert np.abs(expected - previous).max() > 100 * CKKS_TOLERANCE
        previous = expected


def spec_start(spec: FederationSpec, model_dir: Path) -> np.ndarray:
    """Adapter version 0 as the cloud makes it."""
    layout, _ = federation_layout(spec, model_dir)
    return layout.initial_vector(seed=spec.seed, basis_version=spec.basis_version).astype(np.float64)
