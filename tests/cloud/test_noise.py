"""Central DP: the decrypted sum gets Gaussian noise of std z C (Laplace: scale z C) per coordinate, and
the mean is the sum over the total weight W."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.messages import CentralDPConfig, NoiseMechanism, NoiseSchedule
from protocol.messages import schedule_multiplier as noise_multiplier
from tests.cloud.harness import Federation, running_cloud, small_spec, weighted_mean

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mechanism", [NoiseMechanism.GAUSSIAN, NoiseMechanism.LAPLACE])
async def test_central_noise_on_the_mean_is_z_c_over_the_total_weight(
    mechanism: NoiseMechanism,
) -> None:
    z, clip = 2.0, 0.5
    rng = np.random.default_rng(21)
    dp = CentralDPConfig(mechanism=mechanism, noise_multiplier=z, clip_norm=clip)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp))
        plan = await fed.start(cloud.http)
        assert plan.clip_norm == clip
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            assert (
                await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            ).status_code == 202

        noise = await cloud.vector(fed.fid, 1) - weighted_mean(deltas["edge-1"] | deltas["edge-2"])

        # Four clients of weight 1; a Laplace distribution of scale b has std sqrt(2) b.
        expected_std = z * clip / 4.0 * (np.sqrt(2.0) if mechanism is NoiseMechanism.LAPLACE else 1.0)
        # The cloud's noise comes from the OS, so no seed: 1,538 draws give the std within 2.9% (Laplace,
        # kurtosis 6) or 1.8% (Gaussian) one standard error; 15% is five of them.
        assert np.std(noise) == pytest.approx(expected_std, rel=0.15)
        assert abs(np.mean(noise)) < 4 * expected_std / np.sqrt(noise.size)
        status = await cloud.status(fed.fid, 0)
        assert status.metrics["noise_std"] == pytest.approx(expected_std)


def test_the_loose_to_strict_schedule_ramps_the_multiplier_around_its_mean() -> None:
    dp = CentralDPConfig(noise_multiplier=1.0, schedule=NoiseSchedule.LOOSE_TO_STRICT)
    ramp = [noise_multiplier(dp, round_index=t, rounds=5) for t in range(5)]
    assert ramp == pytest.approx([0.5, 0.75, 1.0, 1.25, 1.5])
    assert noise_multiplier(CentralDPConfig(noise_multiplier=1.0), round_index=3, rounds=5) == 1.0
    off = CentralDPConfig(noise_multiplier=1.0, mechanism=NoiseMechanism.NONE)
    assert noise_multiplier(off, round_index=0, rounds=5) == 0.0
