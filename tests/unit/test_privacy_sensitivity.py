"""One upload's client-level sensitivity once it is encoded for encryption, checked by brute force.

A hospital clips its delta to `C` and weights it by at most 1, but the cloud decrypts what the scheme
*encoded*: under packed Paillier every coordinate is rounded to the fixed-point step, so a clipped vector
comes back longer than `C`. The tests draw clipped vectors, among them adversarial ones whose every
coordinate sits just past half a step (so that rounding lengthens each of them by almost half a step),
encode them with the real encoding, and measure the norm of what comes back.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocol.crypto import CKKSParams, PaillierParams, PaillierScheme, PlainParams, generate_scheme
from protocol.crypto.packing import dequantise, quantise
from protocol.sensitivity import encoding_error, lattice_sensitivities, upload_sensitivity

# Just past half a step: np.rint rounds such a coordinate away from zero, by 0.5 - ETA steps.
ETA = 1e-6


def adversarial(
    rng: np.random.Generator, *, size: int, clip_norm: float, step: float, ord: int
) -> np.ndarray:
    """A vector of norm at most `clip_norm` whose coordinates are each `m + 1/2 + ETA` steps long (random
    signs), as many and as long as the norm allows: rounding makes every one of them half a step longer."""
    budget = (clip_norm / step) ** ord  # sum of |u_i|^ord allowed, in steps
    units = np.zeros(size)
    count = min(size, int(budget / (0.5 + ETA) ** ord))
    m = 0
    while count and count * (m + 1.5 + ETA) ** ord <= budget:
        m += 1
    units[:count] = m + 0.5 + ETA
    # Lengthen coordinates by one step each while the norm stays within the clip.
    gain = (m + 1.5 + ETA) ** ord - (m + 0.5 + ETA) ** ord
    extra = int((budget - count * (m + 0.5 + ETA) ** ord) / gain) if count else 0
    units[: min(extra, count)] += 1.0
    signs = rng.choice([-1.0, 1.0], size)
    vector = rng.permutation(units * signs) * step
    assert np.linalg.norm(vector, ord=ord) <= clip_norm
    return vector


def clipped(rng: np.random.Generator, *, size: int, clip_norm: float, ord: int) -> np.ndarray:
    """A random delta (dense, sparse or heavy-tailed) clipped to `clip_norm`."""
    kind = rng.integers(3)
    raw = (
        rng.normal(0.0, 1.0, size)
        if kind == 0
        else rng.standard_cauchy(size)
        if kind == 1
        else rng.normal(0.0, 1.0, size) * (rng.random(size) < 0.05)
    )
    norm = float(np.linalg.norm(raw, ord=ord))
    return raw * (clip_norm / norm) * rng.uniform(0.2, 1.0) if norm > 0 else raw


PAILLIER = {
    "default": PaillierParams(),  # step 1/32767
    "coarse": PaillierParams(quant_bits=8, clip=4.0),  # step 4/127: rounding matters at any size
}


@pytest.mark.parametrize("params", list(PAILLIER.values()), ids=list(PAILLIER))
@pytest.mark.parametrize("ord", [1, 2])
@pytest.mark.parametrize("size", [50, 2306])
def test_paillier_rounding_lengthens_a_clipped_upload_but_never_past_the_computed_sensitivity(
    params: PaillierParams, ord: int, size: int
) -> None:
    rng = np.random.default_rng(size * 10 + ord)
    clip_norm = 1.0
    step = params.clip / (2 ** (params.quant_bits - 1) - 1)  # the fixed-point step, from its definition

    def measured(x: np.ndarray) -> float:
        return float(np.linalg.norm(dequantise(quantise(x, params), params), ord=ord))

    for weight in (1.0, 0.37):
        bound = upload_sensitivity(params, clip_norm=clip_norm, size=size, ord=ord, weight=weight)
        # Hand-worked: the clip plus half a step per coordinate, in the norm of the noise (L1: d, L2: sqrt d).
        per_coordinate = step / 2
        slack = size * per_coordinate if ord == 1 else math.sqrt(size) * per_coordinate
        assert bound == pytest.approx(weight * clip_norm + slack, rel=1e-9)

        worst = weight * adversarial(rng, size=size, clip_norm=clip_norm, step=step / weight, ord=ord)
        # The old ledger's sensitivity, `C` times the weight, is exceeded...
        assert measured(worst) > weight * clip_norm
        if np.count_nonzero(worst) == size:  # every coordinate rounds up: the slack is nearly reached
            assert measured(worst) >= weight * clip_norm + slack - 2 * step * (1 + ord)
        assert measured(worst) <= bound
        for _ in range(200):
            x = weight * clipped(rng, size=size, clip_norm=clip_norm, ord=ord)
            assert measured(x) <= bound


def test_the_paillier_scheme_decrypts_exactly_the_rounded_vector_the_bound_is_about() -> None:
    # The brute force above uses the packing functions; the scheme must decrypt to the same vector.
    params = PaillierParams(quant_bits=8, clip=4.0)
    scheme = generate_scheme(params)
    assert isinstance(scheme, PaillierScheme)
    rng = np.random.default_rng(2)
    x = adversarial(rng, size=300, clip_norm=1.0, step=params.step, ord=2)
    decrypted = scheme.decrypt(scheme.encrypt(x))
    np.testing.assert_array_equal(decrypted, dequantise(quantise(x, params), params))
    assert np.linalg.norm(decrypted) > 1.0
    assert np.linalg.norm(decrypted) <= upload_sensitivity(params, clip_norm=1.0, size=300, ord=2)


def test_ckks_encoding_error_of_one_upload_stays_within_the_per_coordinate_bound() -> None:
    params = CKKSParams()
    scheme = generate_scheme(params)
    rng = np.random.default_rng(4)
    x = rng.uniform(-1.0, 1.0, 1538)
    error = np.abs(scheme.decrypt(scheme.encrypt(x)) - x)
    assert float(error.max()) <= encoding_error(params)
    # CKKS's bound is its scheme's error bound for one summand: 2^(18 - scale bits) at N = 8192.
    assert encoding_error(params) == 2.0 ** (18 - 40)
    assert upload_sensitivity(params, clip_norm=0.5, size=1538, ord=2) == pytest.approx(
        0.5 + math.sqrt(1538) * 2.0**-22
    )


def test_the_plaintext_scheme_adds_nothing() -> None:
    params = PlainParams()
    scheme = generate_scheme(params)
    x = np.random.default_rng(5).normal(0.0, 1.0, 1000)
    np.testing.assert_array_equal(scheme.decrypt(scheme.encrypt(x)), x)
    assert encoding_error(params) == 0.0
    assert upload_sensitivity(params, clip_norm=0.7, size=1000, ord=1) == 0.7


def test_skellam_sensitivities_in_steps_bound_the_rounded_integer_vector() -> None:
    params = PaillierParams(quant_bits=8, clip=4.0)
    rng = np.random.default_rng(3)
    size, clip_norm = 400, 1.0
    reach = upload_sensitivity(params, clip_norm=clip_norm, size=size, ord=2)
    l1, l2 = lattice_sensitivities(l2=reach / params.step, size=size)
    # Hand-worked (Agarwal, Kairouz, Liu 2021): ||q||_2 <= C / step + sqrt(d) / 2, and an integer vector
    # has ||q||_1 <= min(||q||_2^2, sqrt(d) ||q||_2).
    assert l2 == pytest.approx(clip_norm / params.step + math.sqrt(size) / 2, rel=1e-9)
    assert l1 == pytest.approx(min(l2 * l2, math.sqrt(size) * l2))
    vectors = [adversarial(rng, size=size, clip_norm=clip_norm, step=params.step, ord=2)]
    vectors += [clipped(rng, size=size, clip_norm=clip_norm, ord=2) for _ in range(200)]
    for x in vectors:
        q = quantise(x, params)
        assert np.linalg.norm(q) <= l2 and np.abs(q).sum() <= l1
