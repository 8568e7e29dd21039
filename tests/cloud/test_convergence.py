"""The federation stops when the hospitals' validation loss stops moving, and says so."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_server.convergence import converged
from protocol.messages import ConvergenceConfig, FederationInfo, FederationState, RoundPlan
from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio
# Per round, each client's (validation loss, held-out examples); the example-weighted means are
# 0.70, 0.60, 0.595, 0.592: the changes 0.1, 0.005, 0.003 fall below 0.01 twice in a row after round 3.
LOSSES = [
    {"client-a": (0.8, 10), "client-b": (0.6, 30), "client-c": (0.7, 20), "client-d": (0.7, 40)},
    {"client-a": (0.6, 10), "client-b": (0.6, 30), "client-c": (0.6, 20), "client-d": (0.6, 40)},
    {"client-a": (0.595, 10), "client-b": (0.595, 30), "client-c": (0.595, 20), "client-d": (0.595, 40)},
    {"client-a": (0.592, 10), "client-b": (0.592, 30), "client-c": (0.592, 20), "client-d": (0.592, 40)},
]


def weighted(losses: dict[str, tuple[float, int]]) -> float:
    return sum(loss * n for loss, n in losses.values()) / sum(n for _, n in losses.values())


async def test_the_federation_completes_once_the_validation_loss_settles() -> None:
    rng = np.random.default_rng(4)
    spec = small_spec(rounds=10, convergence=ConvergenceConfig(min_delta=0.01, patience=2))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec)
        plan = await fed.start(cloud.http)
        assert plan.validation_fraction == 0.1
        for round_, losses in enumerate(LOSSES):
            deltas = fed.deltas(rng)
            for edge_id in ("edge-1", "edge-2"):
                body = await fed.aggregate(cloud, edge_id, round_, deltas[edge_id], validation=losses)
                assert (await fed.post(cloud.http, body)).status_code == 202
            status = await cloud.status(fed.fid, round_)
            assert status.metrics["validation_loss"] == pytest.approx(weighted(losses))
            info = FederationInfo.model_validate_json(
                (await cloud.http.get(f"/federations/{fed.fid}")).content
            )
            if round_ < 3:
                assert info.state is FederationState.ACTIVE and status.stop_reason is None
                next_plan = RoundPlan.model_validate_json(
                    (await cloud.http.get(f"/federations/{fed.fid}/plan")).content
                )
                assert next_plan.round == round_ + 1

        assert info.state is FederationState.COMPLETED
        assert info.reason is not None and info.reason.startswith("converged")
        assert status.stop_reason == info.reason and "from round 1 to round 3" in status.stop_reason
        assert info.adapter_version == 4  # round 3's update is kept


def test_one_jump_inside_the_patience_window_means_not_converged() -> None:
    config = ConvergenceConfig(min_delta=0.01, patience=3)
    assert converged([(0, 0.5), (1, 0.5), (2, 0.5)], config) is None  # too few rounds to tell
    assert converged([(0, 0.5), (1, 0.505), (2, 0.52), (3, 0.521)], config) is None  # 0.015 in the window
    assert converged([(0, 0.9), (1, 0.5), (2, 0.505), (3, 0.501), (4, 0.5)], config) is not None
