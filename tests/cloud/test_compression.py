"""Upload compression through the cloud: it plans the fewest quantisation bits for the federation's adapter
when it creates it, refuses a spec whose own bits are too few for its noise, and its ledger charges the
randomised rounding's norm bound, not the nearest rounding's slack."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol.crypto.params import PaillierParams
from protocol.messages import CentralDPConfig, Compression, PrivacyReport
from tests.cloud.harness import LAYOUT_SIZE, Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio

Z, CLIP = 0.5, 1.0


async def test_the_cloud_plans_the_bits_and_the_ledger_charges_the_rounding_bound() -> None:
    """Property: with `compression` the stored spec carries the fewest bits the noise allows (here (b)
    binds: with the tail `t = sqrt(2 ln 2^40)` of `beta = 2^-40`, the step `g` is the root of
    `(d/4 + t sqrt(d)/2) g^2 + t C g = 0.1025 C^2`, 0.00855 at d = 1,538; the range is `C (1 + 2^-20)`, so
    `1 / (2^(b-1) - 1) <= g` from b = 8), hospitals round at random, and the round's ledger entry is charged
    `sqrt(C^2 + g^2 d / 4 + t g (C + g sqrt(d) / 2))`, below the `C + sqrt(d) g / 2` that nearest rounding
    is charged (1.045 C against 1.154 C): a ledger charging the old slack fails here."""
    tail = math.sqrt(2 * 40 * math.log(2))
    a = LAYOUT_SIZE / 4 + tail * math.sqrt(LAYOUT_SIZE) / 2
    by_inflation = (-tail * CLIP + math.sqrt((tail * CLIP) ** 2 + 4 * a * 0.1025 * CLIP**2)) / (2 * a)
    clip = CLIP * (1 + 2**-20)
    bits = 1 + math.ceil(math.log2(clip / by_inflation + 1))
    spec = small_spec(
        he=PaillierParams(max_clients=4),
        central_dp=CentralDPConfig(noise_multiplier=Z, clip_norm=CLIP),
        compression=Compression(),
        rounds=1,
    )
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec)
        he = fed.spec.he
        assert isinstance(he, PaillierParams)
        assert bits == 8 and (he.quant_bits, he.clip, he.rounding) == (bits, clip, "stochastic")
        await fed.start(cloud.http)
        rng = np.random.default_rng(5)
        deltas = fed.deltas(rng, scale=0.005)
        for edge_id in ("edge-1", "edge-2"):
            response = await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas[edge_id]))
            assert response.status_code == 202, response.text

        response = await cloud.http.get(f"/federations/{fed.fid}/privacy")
        entry = PrivacyReport.model_validate_json(response.content).central_rounds[0]

    g, d = he.step, LAYOUT_SIZE
    charged = math.sqrt(CLIP**2 + g * g * d / 4 + tail * g * (CLIP + g * math.sqrt(d) / 2)) / CLIP
    assert math.isclose(entry.sensitivity, charged, rel_tol=1e-9)
    assert entry.sensitivity < (CLIP + math.sqrt(d) * g / 2) / CLIP - 0.1


async def test_a_spec_whose_given_bits_are_too_few_for_its_noise_is_refused() -> None:
    spec = small_spec(
        he=PaillierParams(max_clients=4, quant_bits=4, clip=CLIP, rounding="stochastic"),
        central_dp=CentralDPConfig(noise_multiplier=Z, clip_norm=CLIP),
        compression=Compression(bits="given"),
        rounds=1,
    )
    async with running_cloud() as cloud:
        response = await cloud.http.post("/federations", json=spec.model_dump(mode="json"))
        assert response.status_code == 422, response.text
        body = response.json()
        assert (body["code"], body["field"]) == ("invalid_request", "he.quant_bits")
        assert "he.quant_bits 4 is too few" in body["message"]
        assert body["detail"] == {"fewest_quant_bits": 8}
        # Nothing was created.
        assert (await cloud.http.get(f"/federations/{spec.federation_id}")).status_code == 404
