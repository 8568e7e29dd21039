"""Where DP noise comes from: integer noise on a lattice, drawn by exact samplers over a CSPRNG.

Every noise draw of the services (the cloud's central noise, a hospital's noise share) asks a
`LatticeSampler` for integers, which the caller multiplies by the lattice's step: no floating-point sample
ever reaches a release, so Mironov's attacks on floating-point Laplace and Gaussian samplers (CCS 2012)
have nothing to read in the low bits. `OpenDPSampler` is the services' sampler: OpenDP's discrete
Gaussian and discrete Laplace (Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential
Privacy", arXiv:2004.00010), exact rational-arithmetic samplers fed by OpenSSL's CSPRNG; nothing seeds
them. Tests and the simulation's `insecure_reproducible` runs pass a seeded sampler of their own instead.

Skellam noise (`Poisson(lam) - Poisson(lam)`, the shares under packed Paillier) is the exception: no
maintained library samples Poisson from a CSPRNG, so `OpenDPSampler.skellam` draws it with numpy's
Poisson sampler on a generator seeded with 256 bits from the operating system. Its values are integers
(no low bits to attack), but the generator is PCG64, not a CSPRNG (docs/privacy.md, "Limits worth knowing").
"""

from __future__ import annotations

import math
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


class SamplerError(ValueError):
    """A noise scale a sampler cannot draw with (negative, non-finite, or too wide for int64)."""


#: Values per OpenDP call: large vectors are drawn in chunks of this many, one thread per CPU.
CHUNK = 1 << 16

#: The widest noise scale, in lattice steps, a draw accepts: a tail of 40 scales stays inside int64.
MAX_SCALE = 2.0**56


class LatticeSampler(Protocol):
    """Zero-mean integer noise, in steps of a lattice: what `protocol.noise` asks of a source of randomness."""

    def discrete_gaussian(self, *, sigma: float, size: int) -> IntArray:
        """`size` draws of the discrete Gaussian `N_Z(0, sigma^2)` (its variance is at most `sigma^2`)."""
        ...

    def discrete_laplace(self, *, scale: float, size: int) -> IntArray:
        """`size` draws of the discrete Laplace of scale `scale` (`P(x) ~ exp(-|x| / scale)`)."""
        ...

    def skellam(self, *, lam: float, size: int) -> IntArray:
        """`size` draws of `Poisson(lam) - Poisson(lam)` (variance `2 lam`)."""
        ...


def check_scale(name: str, value: float) -> None:
    """Raises `SamplerError` unless `value` is a finite scale in `[0, MAX_SCALE]`."""
    if not math.isfinite(value) or not 0.0 <= value <= MAX_SCALE:
        raise SamplerError(f"{name} must be finite and in [0, {MAX_SCALE:.3g}] lattice steps, got {value!r}")


class OpenDPSampler:
    """OpenDP's exact discrete Gaussian and Laplace samplers (OpenSSL's CSPRNG); see the module docstring
    for Skellam. Stateless: one instance serves every thread."""

    def discrete_gaussian(self, *, sigma: float, size: int) -> IntArray:
        check_scale("sigma", sigma)
        return self._opendp("gaussian", sigma, size)

    def discrete_laplace(self, *, scale: float, size: int) -> IntArray:
        check_scale("scale", scale)
        return self._opendp("laplace", scale, size)

    def skellam(self, *, lam: float, size: int) -> IntArray:
        check_scale("lam", lam)
        if lam == 0.0 or size == 0:
            return np.zeros(size, dtype=np.int64)
        rng = np.random.default_rng(secrets.randbits(256))
        return (rng.poisson(lam, size) - rng.poisson(lam, size)).astype(np.int64)

    @staticmethod
    def _opendp(kind: str, scale: float, size: int) -> IntArray:
        if scale == 0.0 or size == 0:
            return np.zeros(size, dtype=np.int64)
        # Imported here: loading OpenDP's native library is work no importer of `protocol` should pay for.
        import opendp.prelude as dp

        dp.enable_features("contrib")  # OpenDP's gate for measurements outside its vetted core

        def chunk(length: int) -> IntArray:
            domain = dp.vector_domain(dp.atom_domain(T="i64"), length)
            if kind == "gaussian":
                measurement = dp.m.make_gaussian(domain, dp.l2_distance(T="i64"), scale=scale)
            else:
                measurement = dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=scale)
            return np.asarray(measurement([0] * length), dtype=np.int64)

        # OpenDP's library is called through ctypes, which releases the GIL: chunks sample in parallel.
        lengths = [min(CHUNK, size - start) for start in range(0, size, CHUNK)]
        workers = min(len(lengths), os.cpu_count() or 1)
        if workers == 1:
            return chunk(size)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return np.concatenate(list(pool.map(chunk, lengths)))
