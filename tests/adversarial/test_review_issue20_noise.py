"""Issue 20, item 4: noise from a CSPRNG on the aggregate's lattice, Paillier keys of at least 2048 bits, and
packed slots bounded per hospital.

Each test failed on the code before the fix (`git worktree add` of main, this file copied in): the central
noise came from `np.random.default_rng(seed)` in floating point, a 1024-bit Paillier spec was accepted, and a
hospital whose packed plaintext overflowed its slot failed the whole round with `CryptoError`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from protocol.aggregation import RoundNoise
from protocol.crypto import EncryptedVector, HEScheme, packing
from protocol.crypto.params import FINE_NOISE_STEP, PaillierParams
from protocol.distributions import Distribution
from protocol.messages import CentralDPConfig, DropReason, FederationSpec, NoiseMechanism, RoundState
from protocol.noise import lattice_draw
from protocol.samplers import OpenDPSampler
from tests.cloud.harness import Cloud, Federation, running_cloud, small_spec, weighted_mean

#: Draws for the spread checks: the sample std of n draws has a relative standard error of about
#: sqrt((kurtosis - 1) / (4 n)); six of them bound a failure by 2e-9 whatever the OS draws.
DRAWS = 200_000


#: The packages whose noise must come from the CSPRNG sampler (the services and what they share).
PRODUCT = {"protocol", "services", "cloud_server", "edge_aggregator", "client_agent"}


@pytest.fixture
def numpy_generators_refused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`np.random.default_rng` raises when product code calls it: privacy noise must not come from a numpy
    generator. (Libraries keep theirs: scipy seeds one for its docstrings on import. The seeded FFA basis,
    public by design, builds its `Generator` directly.)"""
    real = np.random.default_rng

    def refuse(*args: Any, **kwargs: Any) -> np.random.Generator:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.split(".")[0] in PRODUCT:
            raise AssertionError(f"{caller} drew from a numpy generator")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", refuse)
    yield


@pytest.mark.parametrize("distribution", [Distribution.GAUSSIAN, Distribution.LAPLACE])
def test_central_noise_is_integer_lattice_noise_from_the_csprng_sampler_with_the_asked_spread(
    distribution: Distribution, numpy_generators_refused: None
) -> None:
    """Property: the cloud's noise is an integer number of lattice steps (no floating-point sample reaches
    a release: Mironov 2012), drawn without any numpy generator, and its standard deviation is the one the
    ledger charges (discrete Gaussian: at most sigma, and within 1e-9 of it at sigma >= 2; discrete Laplace
    of scale b: std sqrt(2) b to within 1e-3 at b = 50)."""
    std, step = 0.5, 0.01  # sigma = 50 lattice steps
    drawn = lattice_draw(distribution, std=std, size=DRAWS, sampler=OpenDPSampler(), step=step)

    assert drawn.dtype == np.int64
    kurtosis = 6.0 if distribution is Distribution.LAPLACE else 3.0
    tolerance = 6 * math.sqrt((kurtosis - 1) / (4 * DRAWS))
    assert float(np.std(drawn * step)) == pytest.approx(std, rel=tolerance)
    assert abs(float(np.mean(drawn * step))) < 6 * std / math.sqrt(DRAWS)


@pytest.mark.anyio
async def test_a_round_with_central_noise_closes_without_a_numpy_generator_and_publishes_lattice_noise(
    numpy_generators_refused: None,
) -> None:
    """Property: a round's central noise comes from no numpy generator, and the noisy sum is on the lattice
    of `FINE_NOISE_STEP` (CKKS): the published mean times the total weight is an integer number of steps,
    to within the float32 the adapter is stored in.
    Failed before the fix: the closer drew the noise from `np.random.default_rng(seed)`, so the round did
    not close."""
    deltas = {  # fixed values: the refused generators cannot make them
        "edge-1": {"client-a": np.full(1538, 0.01), "client-b": np.full(1538, -0.02)},
        "edge-2": {"client-c": np.full(1538, 0.03), "client-d": np.full(1538, 0.0)},
    }
    dp = CentralDPConfig(noise_multiplier=1.0, clip_norm=1.0)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp))
        await fed.start(cloud.http)
        for edge_id, edge_deltas in deltas.items():
            body = await fed.aggregate(cloud, edge_id, 0, edge_deltas)
            assert (await fed.post(cloud.http, body)).status_code == 202

        status = await cloud.status(fed.fid, 0)
        assert status.state is RoundState.CLOSED, (status.failure, status.close_error)
        noise = (await cloud.vector(fed.fid, 1) - weighted_mean(deltas["edge-1"] | deltas["edge-2"])) * 4
    # sigma is 1: 1,538 draws hold the std within 20% with room to spare.
    assert float(np.std(noise)) == pytest.approx(1.0, rel=0.2)


def test_a_paillier_spec_of_1024_bits_is_refused_naming_key_bits() -> None:
    """Property: Paillier keys are at least 2048 bits (NIST SP 800-57's floor for factoring-based keys).
    Failed before the fix: `PaillierParams(key_bits=1024)` was accepted."""
    with pytest.raises(ValidationError) as refused:
        PaillierParams(key_bits=1024)
    assert refused.value.errors()[0]["loc"] == ("key_bits",)
    assert "at least 2048" in str(refused.value) and "1024" in str(refused.value)


@pytest.mark.anyio
async def test_a_federation_with_a_1024_bit_paillier_key_is_refused_with_422() -> None:
    spec = small_spec().model_dump(mode="json") | {"he": {"kind": "paillier", "key_bits": 1024}}
    async with running_cloud() as cloud:
        response = await cloud.http.post("/federations", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "he.paillier.key_bits"


def forged_upload(scheme: HEScheme[Any], length: int, *, chunk: int, add: int) -> EncryptedVector[Any]:
    """What a hospital holding only the public key can upload: the packed encoding of zeros with `add`
    added to packed plaintext `chunk`, encrypted as the scheme does (`c = (1 + n m) r^n mod n^2`)."""
    params = scheme.params
    assert isinstance(params, PaillierParams)
    plaintexts = packing.pack(np.zeros(length, dtype=np.int64), params)
    plaintexts[chunk] += add
    n = scheme.pool.n
    payload = [
        (1 + n * m) * r % (n * n) for m, r in zip(plaintexts, scheme.pool.take(len(plaintexts)), strict=True)
    ]
    return EncryptedVector(scheme.kind, scheme.fingerprint, length, 1, payload)


def carry_into_the_next_slot(params: PaillierParams) -> int:
    """Slot 3 set past its width: one carries into slot 4, and slot 3 holds `9 offset` (the zero's `offset`
    and `8 offset`), above the `4 * 2 offset` the round's four uploads can sum to."""
    return ((1 << params.slot_bits) + 8 * packing.offset(params)) << (3 * params.slot_bits)


def above_the_last_slot(params: PaillierParams) -> int:
    return 1 << (params.slots * params.slot_bits)


async def forged_round(cloud: Cloud, spec: FederationSpec, add: int) -> tuple[Federation, dict[str, Any]]:
    """Round 0 of a two-edge Paillier federation in which client-a's upload is `forged_upload(add)`."""
    rng = np.random.default_rng(20)
    fed = await Federation.create(cloud.http, spec)
    await fed.start(cloud.http)
    deltas = fed.deltas(rng, scale=0.01)
    for edge_id, edge_deltas in deltas.items():
        body = await fed.aggregate(cloud, edge_id, 0, edge_deltas)
        if edge_id == "edge-1":
            honest = fed.scheme.encrypt(edge_deltas["client-b"])
            forged = forged_upload(fed.scheme, honest.length, chunk=0, add=add)
            total = fed.scheme.serialize(fed.scheme.sum([forged, honest]))
            body = await fed.aggregate(cloud, edge_id, 0, edge_deltas, ciphertext=total)
        assert (await fed.post(cloud.http, body)).status_code == 202
    return fed, deltas


@pytest.mark.anyio
@pytest.mark.parametrize("attack", [carry_into_the_next_slot, above_the_last_slot])
async def test_a_hospital_overflowing_its_packed_slot_costs_its_region_s_sum_not_the_round(
    attack: Any,
) -> None:
    """Property: a hospital whose packed plaintext carries into the neighbouring slot or sets bits above the
    last slot changes no coordinate of the published model and does not fail the round: its edge's sum
    (range-checked per slot once decrypted on its own) is dropped with reason `out_of_range`, shown in the
    round's status, and the model is the other edge's mean.
    Failed before the fix: the decrypted total failed the slot check and the whole round failed."""
    spec = small_spec(he=PaillierParams(clip=0.1), central_dp=CentralDPConfig(clip_norm=0.1))
    async with running_cloud() as cloud:
        fed, deltas = await forged_round(cloud, spec, attack(spec.he))
        status = await cloud.status(fed.fid, 0)
        assert status.state is RoundState.CLOSED, (status.failure, status.close_error)
        assert status.uploads_dropped == {DropReason.OUT_OF_RANGE: 2}
        assert "edge-1" in status.flagged
        published = await cloud.vector(fed.fid, 1)
    step = spec.he.step
    np.testing.assert_allclose(published, weighted_mean(deltas["edge-2"]), atol=step)


@pytest.mark.anyio
async def test_the_closer_s_noise_is_drawn_once_per_round_and_kept_sealed() -> None:
    """The noise lives in the store sealed under the KEK, and a second closer asking for the same noise gets
    the same integers (no second noisy view of a sum); asking for other noise draws afresh."""
    noise = RoundNoise(NoiseMechanism.GAUSSIAN, 1.0, 1.0, False, 0.0, 1.0)
    async with running_cloud() as cloud:
        federations = cloud.context.federations
        spec = small_spec()
        first = await federations.central_noise("fed-1", 0, noise, spec.he, size=64)
        again = await federations.central_noise("fed-1", 0, noise, spec.he, size=64)
        other = await federations.central_noise("fed-1", 0, noise, spec.he, size=65)
    assert first is not None and again is not None and other is not None
    np.testing.assert_array_equal(first, again)
    assert other.size == 65
    # sigma is C / FINE_NOISE_STEP = 2^40 steps (widened by 8 steps for the rounding of 64 coordinates).
    assert float(np.std(first)) == pytest.approx(1.0 / FINE_NOISE_STEP, rel=0.5)
