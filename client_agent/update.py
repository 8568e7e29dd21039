"""What a hospital encrypts, without a plan, a key or a network: its delta clipped, weighted, checked
against the scheme's range, its share of the round's noise added, then encrypted.

`ClientAgent.make_update` seals its upload here and the one-process simulation (`fedlora.simulation`) seals
each simulated hospital's upload here too, so that what the experiments measure is what the agent sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from client_agent.errors import PlanRefusedError
from protocol.crypto import HEParams, HEScheme
from protocol.messages import NoiseShare
from protocol.noise import add_share, clip
from protocol.rounding import conditional_round, rounding_bound
from protocol.samplers import LatticeSampler, OpenDPSampler
from protocol.sensitivity import upload_sensitivity


@dataclass(frozen=True)
class Sealed:
    """One hospital's upload before it is signed."""

    contribution: np.ndarray  # float64: what was encrypted (clipped, weighted, noise share added)
    ciphertext: bytes
    encrypt_s: float  # the encryption alone, for the `encrypt` timing


def contribution(
    scheme: HEScheme[Any],
    delta: np.ndarray,
    *,
    weight: float,
    clip_norm: float | None,
    clip_ord: Literal[1, 2] = 2,
    share: NoiseShare | None = None,
    sampler: LatticeSampler | None = None,
    held: np.ndarray | None = None,
    rounding_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`delta`, zeroed where the plan holds coordinates back (`held`, from `protocol.reach.planned_hold`:
    LoRA columns fewer than `k` planned hospitals reach, which the cloud must not decrypt one hospital's
    value of), clipped to norm `clip_norm` (L2, or L1 for Laplace noise), weighted (at most 1, so one hospital
    moves the sum by at most `C`), clamped to the scheme's range (packed Paillier encodes a bounded one;
    CKKS' is far wider than any delta), rounded at random onto the quantisation lattice where the scheme asks
    for it (packed Paillier with `rounding: stochastic`: `rounded`), plus this hospital's noise `share` when
    the round asks for distributed DP (Kairouz et al. 2021).

    `clip_norm` None clips nothing: only a simulation's unclipped baseline asks for that, every plan names a
    norm. The share's noise comes from the exact CSPRNG sampler (`protocol.samplers.OpenDPSampler`) unless
    `sampler` is given (tests, and the simulation's `insecure_reproducible` runs); the rounding's likewise
    from the operating system unless `rounding_rng` is given.

    A delta with a NaN or inf (training that diverged) raises `PlanRefusedError` on field `delta`: the
    round is skipped rather than a NaN clipped and encrypted (where it crashed the encoder).
    """
    bad = int(delta.size - np.isfinite(delta).sum())
    if bad:
        raise PlanRefusedError(
            f"the trained delta has {bad} non-finite values: nothing is uploaded this round",
            field="delta",
            value=f"{bad} non-finite",
            limit="0",
        )
    clipped = delta.astype(np.float64)
    if held is not None:
        # Before clipping: zeroing only lowers the norm, and the clip norm is spent on what is published.
        clipped[held] = 0.0
    if clip_norm is not None:
        clipped = clip(clipped, max_norm=clip_norm, ord=clip_ord)
    weighted = _in_range(scheme, weight * clipped, what="the weighted, clipped delta")
    if scheme.params.rounding_step is not None:
        weighted = rounded(
            weighted, scheme.params, clip_norm=clip_norm, clip_ord=clip_ord, weight=weight, rng=rounding_rng
        )
    if share is None:
        return weighted
    # Nobody, this process's logs included, knows the noise drawn from the CSPRNG.
    return _in_range(
        scheme,
        add_share(weighted, share, scheme.params, sampler=sampler or OpenDPSampler()),
        what="the delta with its noise share",
    )


def rounded(
    values: np.ndarray,
    he: HEParams,
    *,
    clip_norm: float | None,
    clip_ord: Literal[1, 2],
    weight: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`values` rounded at random onto `he`'s lattice (`protocol.rounding.conditional_round`), with
    the L2 norm bound the ledger charges for an upload of this weight (`protocol.sensitivity.
    upload_sensitivity`): the one place the hospital's rounding and the cloud's sensitivity meet. An L1 clip
    (Laplace noise) is charged a whole step a coordinate whatever the L2 norm, and an unclipped simulation
    baseline is charged nothing, so their rounding is held to the bound of the vector's own norm, which a
    try meets with probability at least `1 - ROUNDING_BETA`."""
    step = he.rounding_step
    if step is None:
        raise ValueError(f"he.kind {he.kind.value!r} with these parameters does not round at random")
    if clip_norm is not None and clip_ord == 2:
        bound = upload_sensitivity(he, clip_norm=clip_norm, size=values.size, ord=2, weight=weight)
    else:
        bound = rounding_bound(float(np.linalg.norm(values)), step=step, size=values.size)
    return conditional_round(values, step=step, bound=bound, rng=rng).astype(np.float64) * step


def _in_range(scheme: HEScheme[Any], values: np.ndarray, *, what: str) -> np.ndarray:
    """`values` unchanged if every one fits the scheme's range; `PlanRefusedError` (field `delta`, naming
    how many coordinates and the limit, never a value) otherwise."""
    limit = scheme.max_abs_value
    outside = int(np.count_nonzero(np.abs(values) > limit))
    if outside:
        raise PlanRefusedError(
            f"{what} has {outside} coordinates outside the scheme's range [-{limit:g}, {limit:g}]: nothing "
            "is uploaded this round (the federation's spec leaves too little range for its clip norm)",
            field="delta",
            value=f"{outside} coordinates outside",
            limit=f"{limit:g}",
        )
    return values


def seal(
    scheme: HEScheme[Any],
    values: np.ndarray,
    *,
    encrypt: Callable[[HEScheme[Any], np.ndarray], bytes] | None = None,
) -> Sealed:
    """A `contribution(...)` encrypted under the federation's public key and serialised; `encrypt` (a
    masking cohort's `seal`) masks the values in the scheme's ring first."""
    started = time.perf_counter()
    ciphertext = (encrypt or _encrypt)(scheme, values)
    encrypt_s = time.perf_counter() - started
    return Sealed(values, ciphertext, encrypt_s)


def _encrypt(scheme: HEScheme[Any], values: np.ndarray) -> bytes:
    return scheme.serialize(scheme.encrypt(values))
