"""Conditional randomised rounding of a hospital's clipped update onto the quantisation lattice.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
Aggregation" (ICML 2021, arXiv:2102.06387), section 4: each coordinate `x_i` goes to `g floor(x_i / g)` or
the lattice point above it, up with probability equal to its fractional part, so the rounded vector is
unbiased and each coordinate's error has variance at most `g^2 / 4`. Rounding to the nearest point instead
is deterministic, and an adversary can place every coordinate half a step past a lattice point so that all
`d` roundings lengthen the vector: a slack of `sqrt(d) g / 2` in L2, which dwarfs the clip norm at a million
coordinates and coarse steps. Randomised rounding lengthens it less: for `||x||_2 <= c`, with probability at
least `1 - beta` (their Lemma on randomised rounding),

    ||round(x)||_2 <= sqrt(c^2 + g^2 d / 4 + sqrt(2 ln(1 / beta)) g (c + g sqrt(d) / 2)),

and always `||round(x)||_2 <= c + g sqrt(d)` (every coordinate moves by less than a step). The hospital
draws again until the rounded vector meets the smaller of the two (`conditional_round`), so the bound holds
with certainty and is the sensitivity the ledger charges (`protocol.sensitivity`).

Conditioning costs unbiasedness only where a try can fail, and by little when tries rarely fail. Let `e` be
one try's error (independent, zero-mean coordinates, each of variance at most `g^2 / 4`) and `F` the event
that it fails the bound, of probability `p <= beta`. For any unit vector `u`, `E[<u, e> | not F] =
-E[<u, e> 1_F] / (1 - p)`, and by Cauchy-Schwarz `|E[<u, e> 1_F]| <= sqrt(E[<u, e>^2]) sqrt(p) <= (g / 2)
sqrt(p)`: the mean of the kept rounding lies within `(g / 2) sqrt(beta) / (1 - beta)` of `x` in L2, the
whole vector at once (`rounding_bias`), and each coordinate's mean square error is at most
`(g^2 / 4) / (1 - beta)`. The paper's `beta = exp(-1/2)` allows a bias of a whole step; the `beta` here,
`2^-40`, allows `2^-21` of a step per upload, so that even `2^20` hospitals summed carry a bias below
`2^-10` of the sum's rounding std (`protocol.compression`). A small `beta` lengthens the bound by its
`sqrt(2 ln(1 / beta)) = 7.4` tail, which costs little where it matters: at a million coordinates the
`g^2 d / 4` term dominates it; below about 14 coordinates the cap `c + g sqrt(d)` is the smaller of the two,
and there every try meets it, so nothing is redrawn and the rounding is exactly unbiased.

The rounding's randomness comes from the operating system (a generator seeded with 256 bits of
`secrets`), as the noise shares' does (`protocol.samplers`): a seed someone else knows would let them undo
the rounding. Tests and the simulation's `insecure_reproducible` runs pass a seeded generator.

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

import math
import secrets
import sys

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

#: `beta` of the bound: a try fails it with probability at most `2^-40`, so the conditioning moves the
#: rounding's mean by at most `2^-21` of a step (`rounding_bias`) and a hospital almost never rounds twice.
#: The paper's experiments use `exp(-1/2)`, whose bias bound is a whole step (the module docstring).
ROUNDING_BETA = 2.0**-40

#: Tries before `conditional_round` gives up: each fails with probability at most the bound's `beta`, so all
#: of them fail with probability below `2^-8000` at `ROUNDING_BETA` and `e^-100` even at the paper's
#: `exp(-1/2)`; reaching it means the input was longer than the norm the bound was computed for.
MAX_TRIES = 200


class RoundingError(ValueError):
    """The rounding cannot be done as asked: a step or bound that is not positive and finite, or an input
    longer than the norm its bound was computed for."""


def rounding_bound(norm: float, *, step: float, size: int, beta: float = ROUNDING_BETA) -> float:
    """The L2 norm a conditionally rounded vector of `size` coordinates and L2 norm at most `norm` never
    exceeds, on the lattice of `step`: the smaller of
    `sqrt(norm^2 + step^2 size / 4 + sqrt(2 ln(1 / beta)) step (norm + step sqrt(size) / 2))` and
    `norm + step sqrt(size)` (Kairouz, Liu, Steinke 2021, section 4)."""
    if not (step > 0 and math.isfinite(step)):
        raise RoundingError(f"step must be positive and finite, got {step!r}")
    if not (0.0 < beta < 1.0):
        raise RoundingError(f"beta must lie in (0, 1), got {beta!r}")
    root = math.sqrt(size)
    tail = math.sqrt(2.0 * math.log(1.0 / beta))
    conditioned = math.sqrt(norm * norm + step * step * size / 4.0 + tail * step * (norm + step * root / 2.0))
    return min(conditioned, norm + step * root)


def rounding_bias(*, step: float, beta: float = ROUNDING_BETA) -> float:
    """The most the mean of a conditionally rounded vector lies from the vector itself, in L2 over all its
    coordinates: `(step / 2) sqrt(beta) / (1 - beta)` for a bound that a try fails with probability at most
    `beta` (the module docstring's Cauchy-Schwarz argument)."""
    return step / 2.0 * math.sqrt(beta) / (1.0 - beta)


def conditional_round(
    x: npt.NDArray[np.float64], *, step: float, bound: float, rng: np.random.Generator | None = None
) -> IntArray:
    """`x` rounded to integers of `step` without bias, drawn again until `||step q||_2 <= bound`; `rng` None
    draws from a generator the operating system seeds (the services' only choice).

    Raises `RoundingError` if no try met the bound in `MAX_TRIES` (the input was longer than the norm
    `bound` was computed for)."""
    if not (bound >= 0 and math.isfinite(bound)):
        raise RoundingError(f"bound must be finite and >= 0, got {bound!r}")
    if not (step > 0 and math.isfinite(step)):
        raise RoundingError(f"step must be positive and finite, got {step!r}")
    generator = rng if rng is not None else np.random.default_rng(secrets.randbits(256))
    scaled = np.asarray(x, dtype=np.float64).ravel() / step
    floor = np.floor(scaled)
    fraction = scaled - floor
    # Compared in steps; the float64 sum of `q_i^2` is within (size + 1) eps of the exact one (pairwise
    # summation does better), so shrinking the target by that much keeps the bound exact.
    target = (bound / step) ** 2 * (1.0 - 2.0 * (scaled.size + 1) * sys.float_info.epsilon)
    up = np.empty(scaled.shape, dtype=bool)
    for _ in range(MAX_TRIES):
        np.less(generator.random(scaled.shape), fraction, out=up)
        q = floor + up
        if float(q @ q) <= target:
            return q.astype(np.int64).reshape(np.shape(x))
    raise RoundingError(
        f"no rounding of the vector (L2 norm {float(np.linalg.norm(x)):.6g}) met the bound {bound:.6g} in "
        f"{MAX_TRIES} tries: the vector is longer than the norm the bound was computed for"
    )
