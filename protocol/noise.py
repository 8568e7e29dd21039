"""Client-level DP noise: clipping, shares of distributed noise, and the draws themselves.

Shared by the client (which clips, weights and, with distributed DP, adds its share before encrypting) and
the cloud (which adds the central noise, or tops up the shares of clients that dropped out).

Distributed noise (Kairouz, Liu, Steinke 2021, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation", arXiv:2102.06387): `n` clients each add independent noise of variance
`(z C)^2 / n`, so the sum carries `N(0, (z C)^2)` and no party, the decrypting cloud included, ever sees a
noise-free sum. Under CKKS the shares are discrete Gaussians on the lattice of `HEParams.noise_step`
(`protocol.samplers`: every draw is an integer times a step, from an exact sampler). Under packed Paillier the plaintexts are fixed-point
integers, so the shares are Skellam, `Poisson(lam) - Poisson(lam)` steps, which sums to Skellam again
(Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially Private Federated Learning",
arXiv:2110.04995). If only `m < n` clients contribute, the sum holds `m / n` of the variance: the cloud
tops it up to the target before it releases anything (`top_up_std`), and the ledger records that the
cloud itself saw the smaller noise. A dropout margin sizes the shares for fewer clients, so that the
decrypting cloud too sees the full noise while dropouts stay within the margin.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from protocol.crypto.params import HEParams
from protocol.distributions import Distribution
from protocol.messages import CentralDPConfig, NoiseMechanism, NoiseShare, shares_for
from protocol.samplers import LatticeSampler, SamplerError


class NoiseError(ValueError):
    """Noise cannot be drawn or fitted as asked."""


def clip(vector: np.ndarray, *, max_norm: float, ord: int = 2) -> np.ndarray:
    """`vector` scaled down to norm `max_norm` (L2, or L1 for Laplace noise) if it is longer."""
    norm = float(np.linalg.norm(vector, ord=ord))
    return vector if norm <= max_norm else vector * (max_norm / norm)


def share_for(dp: CentralDPConfig, he: HEParams, *, multiplier: float, planned_clients: int) -> NoiseShare:
    """Each client's share of a round whose target noise std on the sum is `multiplier * C`."""
    shares = shares_for(dp, planned_clients)
    distribution = distribution_for(dp.mechanism, he, distributed=True)
    if distribution is Distribution.LAPLACE:
        raise NoiseError("distributed noise cannot be Laplace: a sum of Laplace shares is not Laplace")
    return NoiseShare(
        mechanism=distribution,
        std=multiplier * dp.clip_norm / math.sqrt(shares),
        clients=shares,
        noise_multiplier=multiplier,
    )


def distribution_for(mechanism: NoiseMechanism, he: HEParams, *, distributed: bool) -> Distribution:
    """What noise for `mechanism` is drawn from under `he`: the scheme's requirement if it has one
    (`HEParams.noise_distribution`), else the mechanism's own distribution."""
    if mechanism is NoiseMechanism.NONE:
        raise NoiseError("mechanism 'none' draws no noise")
    return he.noise_distribution(distributed=distributed) or Distribution(mechanism.value)


def skellam_lambda(std: float, step: float) -> float:
    """`lam` of `Poisson(lam) - Poisson(lam)` (variance `2 lam` steps^2) with standard deviation `std`."""
    return (std / step) ** 2 / 2.0


def lattice_draw(
    distribution: Distribution, *, std: float, size: int, sampler: LatticeSampler, step: float
) -> npt.NDArray[np.int64]:
    """`size` draws of zero-mean integer noise whose standard deviation is (at most) `std / step`: the
    discrete Gaussian of sigma `std / step`, the discrete Laplace of scale `std / (sqrt(2) step)`, or
    Skellam of variance `(std / step)^2`. Multiplied by `step`, they are noise of std `std` on the lattice
    of `step` (Canonne, Kamath, Steinke 2020: the discrete Gaussian's variance is below sigma^2)."""
    if std < 0 or not math.isfinite(std):
        raise NoiseError(f"std must be finite and >= 0, got {std}")
    if not step > 0 or not math.isfinite(step):
        raise NoiseError(f"noise needs a positive lattice step, got {step}")
    units = std / step
    try:
        match distribution:
            case Distribution.GAUSSIAN:
                return sampler.discrete_gaussian(sigma=units, size=size)
            case Distribution.LAPLACE:
                return sampler.discrete_laplace(scale=units / math.sqrt(2.0), size=size)
            case Distribution.SKELLAM:
                return sampler.skellam(lam=skellam_lambda(std, step), size=size)
    except SamplerError as e:
        raise NoiseError(f"noise of std {std} on the lattice of step {step}: {e}") from e
    raise NoiseError(f"unknown noise distribution {distribution!r}")


def draw(
    distribution: Distribution, *, std: float, size: int, sampler: LatticeSampler, step: float
) -> np.ndarray:
    """`lattice_draw`'s integers as float64 multiples of `step`: noise of standard deviation `std` that
    lies exactly on the lattice (every multiple of a power-of-two step below 2^53 steps is exact)."""
    return (
        lattice_draw(distribution, std=std, size=size, sampler=sampler, step=step).astype(np.float64) * step
    )


def add_share(
    contribution: np.ndarray, share: NoiseShare, he: HEParams, *, sampler: LatticeSampler
) -> np.ndarray:
    """The client's weighted, clipped delta with its noise share added, ready to encrypt.

    Under a bounded encoding (packed Paillier: `he.value_bound`) every coordinate must stay inside it (the
    spec reserves `SHARE_TAIL_SIGMAS` share std for it); a draw outside is refused rather than silently
    clipped, since clipping the noise would weaken it.
    """
    noise = draw(share.mechanism, std=share.std, size=contribution.size, sampler=sampler, step=he.noise_step)
    noisy = contribution + noise
    bound = he.value_bound
    if bound is not None:
        worst = float(np.max(np.abs(noisy))) if noisy.size else 0.0
        if worst > bound:
            raise NoiseError(
                f"a noisy coordinate is {worst:.4g}, outside he.clip {bound}: the fixed-point range has "
                "no room for this share"
            )
    return noisy
