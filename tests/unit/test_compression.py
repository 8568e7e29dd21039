"""Upload compression (`protocol.compression`): the fewest bits the DP noise allows, the spec that asks for
them, and a real packed Paillier sum of hospitals that rounded at random to them.

The expected bits are worked out by hand from the three conditions in the module docstring: (a)
`sqrt(n / (1 - beta)) g / 2 <= f_a sigma`; (b) `g^2 d / 4 + t g (C + g sqrt(d) / 2) <= ((1 + f_b)^2 - 1) C^2`
(the rounding bound at `beta = 2^-40`, tail `t = sqrt(2 ln(1 / beta))`, squared), a quadratic in `g`; (c)
`clip = (C + 8 s) (1 + 2^-20)`; then the fewest `b` with `clip / (2^(b-1) - 1) <= g`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from client_agent.update import contribution
from fedlora.specs import federation_spec
from protocol.aggregation import round_noise
from protocol.compression import CompressionError, choose_quant_bits, plan_compression, spec_plan
from protocol.crypto import CKKSParams, PaillierParams, PaillierScheme
from protocol.crypto.errors import PackingError
from protocol.messages import CentralDPConfig, Compression, Contribution, FederationSpec
from protocol.sensitivity import Upload, release_sensitivity, upload_sensitivity

BETA = 2.0**-40
TAIL = math.sqrt(2 * math.log(1 / BETA))
MARGIN = 1 + 2.0**-20


def largest_step(
    *, clip_norm: float, size: int, noise_std: float, summands: int, fa: float, fb: float
) -> float:
    """The largest step (a) and (b) allow, solved by hand: (a) directly, (b) as the positive root of
    `(d/4 + t sqrt(d)/2) g^2 + t C g - ((1 + fb)^2 - 1) C^2`."""
    by_error = 2 * fa * noise_std * math.sqrt((1 - BETA) / summands)
    a = size / 4 + TAIL * math.sqrt(size) / 2
    c = ((1 + fb) ** 2 - 1) * clip_norm**2
    by_inflation = (-TAIL * clip_norm + math.sqrt((TAIL * clip_norm) ** 2 + 4 * a * c)) / (2 * a)
    return min(by_error, by_inflation)


def fewest_bits(clip: float, step: float) -> int:
    return 1 + math.ceil(math.log2(clip / step + 1))


@pytest.mark.parametrize(
    ("size", "noise_std", "summands", "share_std", "bits", "clip"),
    [
        (10_000, 0.5, 16, 0.0, 9, MARGIN),  # (b) binds: g <= 0.004816, 1 / g = 207.6 -> 2^8 - 1 = 255
        (100, 0.01, 100, 0.0, 14, MARGIN),  # (a) binds: g <= 2e-4, 1 / g = 5000 -> 2^13 - 1 = 8191
        (10_000, 0.5, 16, 0.25, 11, 3 * MARGIN),  # (c): clip 1 + 8 * 0.25 = 3, 3 / 0.004816 = 623 -> 2^10 - 1
    ],
)
def test_the_chooser_returns_the_fewest_bits_worked_out_by_hand(
    size: int, noise_std: float, summands: int, share_std: float, bits: int, clip: float
) -> None:
    clip_norm = 1.0
    step = largest_step(
        clip_norm=clip_norm, size=size, noise_std=noise_std, summands=summands, fa=0.1, fb=0.05
    )
    assert fewest_bits(clip, step) == bits  # the hand formula agrees with the worked figure

    plan = choose_quant_bits(
        clip_norm=clip_norm,
        size=size,
        noise_std=noise_std,
        summands=summands,
        error_fraction=0.1,
        inflation_fraction=0.05,
        share_std=share_std,
    )

    assert (plan.quant_bits, plan.clip) == (bits, pytest.approx(clip))
    assert plan.step == pytest.approx(clip / (2 ** (bits - 1) - 1))
    assert plan.error_ratio <= 0.1 and plan.inflation <= 0.05
    fewer = clip / (2 ** (bits - 2) - 1)  # one bit less: a step too coarse for (a) or (b)
    assert fewer > step


def test_no_bits_for_noise_too_small_to_hide_any_rounding() -> None:
    with pytest.raises(CompressionError, match="no quant_bits up to 32") as caught:
        choose_quant_bits(
            clip_norm=1.0, size=100, noise_std=1e-12, summands=10, error_fraction=0.1, inflation_fraction=0.05
        )
    assert caught.value.field == "he.quant_bits"


def spec(
    *, he: PaillierParams, distributed: bool = False, compression: Compression | None = None
) -> FederationSpec:
    return FederationSpec(
        federation_id="f",
        he=he,
        central_dp=CentralDPConfig(noise_multiplier=0.5, clip_norm=1.0, distributed=distributed),
        compression=compression or Compression(),
    )


def test_auto_sets_the_fewest_bits_the_least_range_and_random_rounding() -> None:
    planned = plan_compression(spec(he=PaillierParams(max_clients=16)), layout_size=10_000)
    assert isinstance(planned.he, PaillierParams)
    assert (planned.he.quant_bits, planned.he.clip, planned.he.rounding) == (9, MARGIN, "stochastic")
    assert plan_compression(planned, layout_size=10_000) == planned  # planning again changes nothing

    # With distributed shares (k = 2, z C / sqrt(2) each) the range grows to (C + 8 z C / sqrt(2)) (1 + 2^-20).
    shared = plan_compression(spec(he=PaillierParams(max_clients=16), distributed=True), layout_size=10_000)
    assert isinstance(shared.he, PaillierParams)
    assert shared.he.clip == pytest.approx((1.0 + 8 * 0.5 / math.sqrt(2)) * MARGIN, rel=1e-12)


def test_given_bits_too_few_for_the_noise_are_refused_naming_the_field() -> None:
    given = Compression(bits="given")
    few = spec(
        he=PaillierParams(max_clients=16, quant_bits=6, clip=1.0, rounding="stochastic"), compression=given
    )
    with pytest.raises(CompressionError, match=r"he\.quant_bits 6 is too few") as caught:
        plan_compression(few, layout_size=10_000)
    assert (caught.value.field, caught.value.value, caught.value.detail) == (
        "he.quant_bits",
        6,
        {"fewest_quant_bits": 9},
    )
    enough = spec(
        he=PaillierParams(max_clients=16, quant_bits=9, clip=1.0, rounding="stochastic"), compression=given
    )
    assert plan_compression(enough, layout_size=10_000) == enough


def test_a_spec_compression_cannot_serve_is_refused() -> None:
    with pytest.raises(ValidationError, match="compression quantises packed Paillier"):
        FederationSpec(
            federation_id="f",
            he=CKKSParams(),
            central_dp=CentralDPConfig(noise_multiplier=0.5),
            compression=Compression(),
        )
    with pytest.raises(ValidationError, match="against Gaussian central noise"):
        FederationSpec(federation_id="f", he=PaillierParams(), compression=Compression())
    with pytest.raises(ValidationError, match=r"he\.rounding 'stochastic'"):
        spec(he=PaillierParams(), compression=Compression(bits="given"))


def test_the_ledger_charges_the_rounding_bound_not_the_nearest_rounding_slack() -> None:
    """Property: under randomised rounding one upload's reach is `rounding_bound(w C)`, which holds with
    certainty; the old charge `C + sqrt(d) g / 2` is the nearest rounding's and would overcharge (and, for
    the smaller weights' late uploads, `w C + slack(C)` would undercharge: the bound's slack grows as `w`
    falls)."""
    size = 10_000
    planned = plan_compression(spec(he=PaillierParams(max_clients=16)), layout_size=size)
    g = planned.he.lattice_step
    assert g is not None
    c = 1.0

    def by_hand(norm: float) -> float:
        return math.sqrt(norm**2 + g * g * size / 4 + TAIL * g * (norm + g * math.sqrt(size) / 2))

    lines = [
        Contribution(
            client_id=cid, weight=1.0, num_examples=10, rank=2, nonce="0" * 32, ciphertext_sha256="0" * 64
        )
        for cid in ("a", "b")
    ]
    noise = round_noise(planned, multiplier=0.5, contributions=lines, layout_size=size, shares_planned=None)
    assert noise.sensitivity == pytest.approx(by_hand(c) / c)
    assert noise.sensitivity < (c + math.sqrt(size) * g / 2) / c - 0.15  # the old charge: 1.196 C here
    uploads = [Upload("a", 1.0), Upload("a", 0.5, factor=0.5)]
    reach = release_sensitivity(uploads, he=planned.he, clip_norm=c, size=size, ord=2)
    assert reach == pytest.approx((by_hand(c) + 0.5 * by_hand(0.5 * c)) / c)


def test_a_sum_of_hospitals_rounded_to_auto_bits_decrypts_within_the_stated_error() -> None:
    # Prepare: four hospitals' deltas clipped to C = 1 at 3,000 values, a 2048-bit key, the bits planned.
    size, hospitals = 3_000, 4
    planned = plan_compression(spec(he=PaillierParams(max_clients=16)), layout_size=size)
    he = planned.he
    assert isinstance(he, PaillierParams)
    plan = spec_plan(planned, layout_size=size)
    scheme = PaillierScheme.generate(he)
    rng = np.random.default_rng(7)
    deltas = [rng.normal(0.0, 1.0, size) for _ in range(hospitals)]
    deltas[0] = (
        np.full(size, he.step / 2) * rng.choice([-1.0, 1.0], size) * 0.999
    )  # every coordinate a coin toss

    # Execute: each hospital's contribution as the agent makes it, encrypted, summed, decrypted.
    values = [
        contribution(scheme, d, weight=1.0, clip_norm=1.0, rounding_rng=np.random.default_rng(100 + i))
        for i, d in enumerate(deltas)
    ]
    total = scheme.decrypt(scheme.sum(scheme.encrypt(v) for v in values))

    # Assert: every upload lies on the lattice within the ledger's bound; the sum's error against the
    # clipped deltas is unbiased and its spread within sqrt(n) g / 2, so within the stated tolerance.
    for v in values:
        units = v / he.step
        assert np.array_equal(units, np.rint(units))
        assert np.linalg.norm(v) <= upload_sensitivity(he, clip_norm=1.0, size=size, ord=2)
    clipped = [d * min(1.0, 1.0 / np.linalg.norm(d)) for d in deltas]
    error = total - np.sum(clipped, axis=0)
    bound = math.sqrt(hospitals) * he.step / 2
    assert np.sqrt(np.mean(error**2)) <= bound * 1.05
    assert abs(error.mean()) <= 6 * bound / math.sqrt(size)
    assert bound <= plan.error_std <= 0.1 * plan.noise_std


def test_the_flat_settings_ask_for_auto_bits_by_name() -> None:
    flat = federation_spec(
        federation_id="f", scheme="paillier", quant_bits="auto", central_noise=0.5, clip_norm=1.0
    )
    assert flat.compression == Compression(bits="auto")
    assert isinstance(flat.he, PaillierParams) and flat.he.rounding == "stochastic"


def test_auto_specs_are_validated_on_their_planned_bits_not_the_placeholders() -> None:
    """Property: with `bits: auto` the submitted `he.quant_bits` and `he.clip` are placeholders the cloud
    replaces, so neither the range check (`he.clip` below the clip norm) nor the masking ring check (slots
    past 64 bits: 32 + 2 * 16 + 1 = 65 at 32 bits and 2^16 hospitals a sum) refuses them; the planned bits
    are checked instead. Without `auto` both refusals stand."""
    he = PaillierParams(masking=True, quant_bits=32, max_clients=1 << 16, clip=0.5)
    dp = CentralDPConfig(noise_multiplier=0.5, clip_norm=2.0, distributed=True)
    auto = FederationSpec(federation_id="f", he=he, central_dp=dp, compression=Compression())
    planned = plan_compression(auto, layout_size=10_000).he
    assert isinstance(planned, PaillierParams)
    assert planned.ring_problem() is None and planned.clip >= 2.0 and planned.quant_bits < 32
    with pytest.raises(ValidationError, match="above the 64 this encoding holds"):
        FederationSpec(federation_id="f", he=he.model_copy(update={"clip": 8.0}), central_dp=dp)
    with pytest.raises(PackingError, match="above the 64 this encoding holds"):
        PaillierScheme.generate(he)  # nor can a scheme be built on the placeholders
    with pytest.raises(ValidationError, match=r"below central_dp\.clip_norm 2"):
        FederationSpec(
            federation_id="f",
            he=PaillierParams(clip=0.5),
            central_dp=dp.model_copy(update={"distributed": False}),
        )


def test_the_planned_error_counts_the_late_buckets() -> None:
    """Property: a release sums the fresh uploads and a late bucket for each earlier round the spec allows,
    weighted `decay^s`, so the plan sizes the rounding for `n (1 + sum_s decay^(2s))` uploads: at decay 0.5
    and 2 rounds late, `16 * (1 + 1/4 + 1/16) = 21` (worked by hand); the planned error then holds."""
    from protocol.messages import LateUploadConfig

    late = LateUploadConfig(max_staleness=2, decay=0.5)
    spec_late = FederationSpec(
        federation_id="f",
        he=PaillierParams(max_clients=16),
        central_dp=CentralDPConfig(noise_multiplier=0.05, clip_norm=1.0),
        compression=Compression(),
        late_uploads=late,
    )
    plan = spec_plan(spec_late, layout_size=1_000)
    assert plan.error_std == pytest.approx(math.sqrt(21 / (1 - BETA)) * plan.step / 2)
    assert plan.error_std <= 0.1 * 0.05
    fresh = spec_plan(spec_late.model_copy(update={"late_uploads": None}), layout_size=1_000)
    assert fresh.step >= plan.step
