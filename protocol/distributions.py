"""The distributions noise is drawn from: what `protocol.noise.draw` samples and HE parameters ask for.

Not the spec's `NoiseMechanism` (what an operator chooses for central DP, `none` included): a Gaussian
spec under packed Paillier with distributed noise is drawn as Skellam, since the shares must stay on the
fixed-point lattice (`HEParams.noise_distribution`). The values are those `NoiseShare.mechanism` carries.
"""

from __future__ import annotations

from enum import StrEnum


class Distribution(StrEnum):
    GAUSSIAN = "gaussian"
    LAPLACE = "laplace"  # scale `std / sqrt(2)`
    SKELLAM = "skellam"  # `Poisson(lam) - Poisson(lam)` steps of a lattice (Agarwal et al. 2021)
