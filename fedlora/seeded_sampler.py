"""A seeded lattice sampler for reproducible runs only: the simulation's `insecure_reproducible` switch and
tests. Never used by the services, which draw every noise value from `protocol.samplers.OpenDPSampler`.

Its discrete Gaussian and Laplace are numpy's floating-point draws rounded to the nearest integer: the same
spread to within a fraction of a step, but neither exact nor from a CSPRNG, so nothing it draws protects
anyone.
"""

from __future__ import annotations

import numpy as np

from protocol.samplers import IntArray, check_scale


class SeededSampler:
    """`protocol.samplers.LatticeSampler` over a numpy generator the caller seeded."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def discrete_gaussian(self, *, sigma: float, size: int) -> IntArray:
        check_scale("sigma", sigma)
        return np.rint(self._rng.normal(0.0, sigma, size)).astype(np.int64)

    def discrete_laplace(self, *, scale: float, size: int) -> IntArray:
        check_scale("scale", scale)
        return np.rint(self._rng.laplace(0.0, scale, size)).astype(np.int64)

    def skellam(self, *, lam: float, size: int) -> IntArray:
        check_scale("lam", lam)
        return (self._rng.poisson(lam, size) - self._rng.poisson(lam, size)).astype(np.int64)
