"""From the edges' ciphertext sums to the next global adapter: sum, decrypt the total only, average, noise.

Each edge's ciphertext is already the sum of at least `k` clients' pre-weighted deltas; the cloud adds them
homomorphically and decrypts only that global total. Dividing by the total weight gives the weighted mean
delta. Central client-level DP (DP-FedAvg, McMahan et al. 2018, arXiv:1710.06963): every client clips its
delta to norm `C`, so one client moves the mean by at most `C / W`; Gaussian noise of standard deviation
`z C / W` per coordinate is added to the mean (`z` the noise multiplier, `W` the total weight).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.crypto import HEScheme
from protocol.messages import CentralDPConfig, NoiseMechanism, NoiseSchedule


@dataclass(frozen=True)
class Aggregated:
    vector: np.ndarray  # the new global adapter, float32
    update_norm: float  # L2 norm of what was added to the previous global adapter (noise included)
    noise_std: float  # per-coordinate standard deviation of the central noise (0 without noise)
    summands: int  # client encryptions inside the decrypted total


def noise_multiplier(dp: CentralDPConfig, *, round_index: int, rounds: int) -> float:
    """The `z` of one round. `loose_to_strict` (seed 001: loose early, strict late) ramps it linearly
    from `z / 2` in the first round to `3 z / 2` in the last, so its mean over the rounds is `z`."""
    if dp.mechanism is NoiseMechanism.NONE or dp.noise_multiplier == 0.0:
        return 0.0
    if dp.schedule is NoiseSchedule.CONSTANT or rounds <= 1:
        return dp.noise_multiplier
    progress = min(max(round_index, 0), rounds - 1) / (rounds - 1)
    return dp.noise_multiplier * (0.5 + progress)


def central_noise(
    dp: CentralDPConfig, *, multiplier: float, total_weight: float, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Noise for the mean update, and its per-coordinate standard deviation `multiplier * C / W`.

    Laplace noise gets the same standard deviation (scale `std / sqrt(2)`), as `noise_multiplier`'s
    description says: "std is z * clip_norm".
    """
    if multiplier <= 0.0 or dp.mechanism is NoiseMechanism.NONE:
        return np.zeros(size), 0.0
    std = multiplier * dp.clip_norm / total_weight
    if dp.mechanism is NoiseMechanism.LAPLACE:
        return rng.laplace(0.0, std / math.sqrt(2.0), size), std
    return rng.normal(0.0, std, size), std


def aggregate(
    scheme: HEScheme[Any],
    ciphertexts: Sequence[bytes | memoryview],
    *,
    global_vector: np.ndarray,
    total_weight: float,
    dp: CentralDPConfig,
    multiplier: float,
    rng: np.random.Generator,
) -> Aggregated:
    """The next global adapter from the edges' sums. Raises `CryptoError` if a sum does not decrypt."""
    if total_weight <= 0:
        raise ValueError(f"total weight must be positive, got {total_weight}")
    length = int(global_vector.size)
    parts = [scheme.deserialize(c, expected_length=length) for c in ciphertexts]
    total = scheme.sum(parts)
    mean = scheme.decrypt(total) / total_weight
    noise, std = central_noise(dp, multiplier=multiplier, total_weight=total_weight, size=length, rng=rng)
    previous = global_vector.astype(np.float64)
    vector = (previous + mean + noise).astype(np.float32)
    norm = float(np.linalg.norm(vector.astype(np.float64) - previous))
    return Aggregated(vector=vector, update_norm=norm, noise_std=std, summands=total.count)
