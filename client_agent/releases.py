"""What a hospital releases about its own data, and what each release costs it at the example level.

Adjacency: the hospital's data with one example added or removed (the training part and the held-out part
together). Three mechanisms touch the data, each charged in the hospital's accountant history as entries
`(noise_multiplier, sample_rate, steps)` of a Gaussian mechanism:

1. **The public count** (once, before anything else): `n + N(0, COUNT_NOISE_STD^2)`, rounded, at least 1.
   Every number the federation sees that depends on the data size (the upload's `num_examples`, its weight,
   the enrolment's size for the rank policy, the DP-SGD sample rate and the held-out count) is computed from
   it, never from `n`: an exact `n` would tell an example's presence apart with certainty. Sensitivity 1,
   so the entry is `(COUNT_NOISE_STD, 1.0, 1)`.
2. **DP-SGD** on the training part (`client_agent.train`), at the sample rate of the *public* count.
3. **The held-out loss** (with `convergence`): each example's cross-entropy clipped to `[0, loss_clip]`, summed,
   plus `N(0, (sigma_v loss_clip)^2)`, divided by the public held-out count. Entry `(sigma_v, 1.0, 1)`.

Which examples are held out is decided per example by a keyed hash (HMAC-SHA256 under a key drawn from the
operating system and kept in the hospital's state folder), so adding or removing one example moves no
other one between the parts. An example is then in exactly one part, and the hospital's guarantee is the
larger of the two parts' epsilons (parallel composition, McSherry 2009, "Privacy Integrated Queries",
Theorem 4), each part's history holding the count release and its own mechanism.

Noise from the exact discrete Gaussian sampler over a CSPRNG (`protocol.samplers.OpenDPSampler`) unless a
caller passes a sampler (tests, and the simulation behind its loudly named reproducibility switch).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from opacus.accountants import create_accountant

from protocol.messages import COUNT_ENTRY as COUNT_ENTRY  # re-exported: what a history starts with
from protocol.messages import COUNT_NOISE_STD
from protocol.samplers import LatticeSampler, OpenDPSampler

HistoryEntry = tuple[float, float, int]
History = tuple[HistoryEntry, ...]

# The noise on the public count, in examples (`protocol.messages`, so that the ledger knows the entry): a
# weight or a sample rate moves by a few percent for a hospital of a few hundred examples, and the release
# costs a small fraction of any budget worth having (RDP `alpha / (2 * 10^2)`).
SPLIT_KEY_BYTES = 32
MAX_RELEASED_LOSS = 1e6  # the wire model's bound on `validation_loss`

# Noise multipliers `calibrate` searches, and its relative tolerance.
_SEARCH = (1e-2, 1e4)
_TOLERANCE = 1e-4
_PRV_FLOOR = 0.2  # Opacus' PRV grid stays under half a GiB down to this multiplier (measured)
#: Relative room a projection may exceed the budget by: float rounding of the same sum of RDP curves taken
#: in another grouping, not a margin anyone can use.
BUDGET_ROUNDING = 1e-9


class ReleaseError(ValueError):
    """A release cannot be made as asked (a budget no noise meets, an empty part, a bad argument)."""


#: The lattice the held-out loss sum is rounded to before its noise, in units of `loss_clip`: a power of two,
#: so that the noisy sum is an exact float64.
LOSS_STEP = 2.0**-20


@dataclass(frozen=True)
class PublicCounts:
    """The hospital's noisy example count and the part sizes derived from it (post-processing only)."""

    total: int
    train: int
    held_out: int | None

    @classmethod
    def derive(cls, total: int, fraction: float | None) -> PublicCounts:
        if total < 1:
            raise ReleaseError(f"the public count must be at least 1, got {total}")
        if fraction is None:
            return cls(total, total, None)
        if not 0.0 < fraction < 1.0:
            raise ReleaseError(f"the held-out fraction must lie in (0, 1), got {fraction}")
        held_out = max(1, round(total * fraction))
        return cls(total, max(1, total - held_out), held_out)


def noisy_count(n: int, *, sampler: LatticeSampler | None = None) -> int:
    """`n` released with discrete Gaussian noise of sigma `COUNT_NOISE_STD` (charge `COUNT_ENTRY` once for
    it: the discrete Gaussian's RDP is at most the continuous one's, Canonne, Kamath, Steinke 2020)."""
    if n < 0:
        raise ReleaseError(f"an example count cannot be negative, got {n}")
    draw = (sampler or OpenDPSampler()).discrete_gaussian(sigma=COUNT_NOISE_STD, size=1)
    return max(1, n + int(draw[0]))


def new_split_key() -> bytes:
    return secrets.token_bytes(SPLIT_KEY_BYTES)


def held_out_mask(texts: Sequence[str], labels: Sequence[int], *, fraction: float, key: bytes) -> np.ndarray:
    """Which examples are held out: each one on its own, with probability `fraction`, by a keyed hash of
    its text and label, so that the part an example lands in depends on nothing but that example."""
    if len(texts) != len(labels):
        raise ReleaseError(f"got {len(texts)} texts but {len(labels)} labels")
    if not 0.0 < fraction < 1.0:
        raise ReleaseError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    if len(key) < 16:
        raise ReleaseError(f"the split key must hold at least 16 bytes, got {len(key)}")
    cut = fraction * 2.0**64
    mask = np.empty(len(texts), dtype=bool)
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        digest = hmac.new(key, json.dumps([text, int(label)]).encode(), hashlib.sha256).digest()
        mask[index] = int.from_bytes(digest[:8], "big") < cut
    return mask


def epsilon_of(history: Sequence[HistoryEntry], *, delta: float, accountant: Literal["rdp", "prv"]) -> float:
    """Opacus' epsilon for an accountant history (0 with nothing spent)."""
    if not any(steps for _, _, steps in history):
        return 0.0
    spent = create_accountant(mechanism=accountant)
    spent.history = [entry for entry in history if entry[2] > 0]
    return float(spent.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=256)
def calibrate(
    *,
    epsilon: float,
    delta: float,
    accountant: Literal["rdp", "prv"],
    fixed: History,
    sample_rate: float,
    steps: int,
) -> float:
    """Smallest noise multiplier (to `_TOLERANCE` relative) at which `fixed` plus `steps` Gaussian steps at
    `sample_rate` spend at most `epsilon` at `delta`. Memoised: a hospital asks with the same arguments
    before and during each round, and a simulation once per hospital per round."""
    if not epsilon > 0 or not 0 < delta < 1 or not 0 < sample_rate <= 1 or steps < 1:
        raise ReleaseError(
            f"cannot calibrate epsilon={epsilon}, delta={delta}, sample_rate={sample_rate}, steps={steps}"
        )
    search = _SEARCH
    if accountant == "prv":
        # Opacus' PRV accountant builds a grid that grows without bound as the multiplier falls (12 GiB at
        # 0.01). PRV never certifies more than RDP, so its multiplier lies at or below RDP's: search just
        # under that, and keep RDP's where the bracket would reach the expensive region.
        ceiling = calibrate(
            epsilon=epsilon, delta=delta, accountant="rdp", fixed=fixed, sample_rate=sample_rate, steps=steps
        )
        if ceiling / 2 < _PRV_FLOOR:
            return ceiling
        search = (ceiling / 2, ceiling)

    def spends(log_sigma: float) -> float:
        entry = (math.exp(log_sigma), sample_rate, steps)
        with warnings.catch_warnings():
            # The search's extreme multipliers sit at the edge of Opacus' order grid, which it notes.
            warnings.filterwarnings("ignore", message="Optimal order is the")
            return epsilon_of((*fixed, entry), delta=delta, accountant=accountant)

    low, high = math.log(search[0]), math.log(search[1])
    if spends(high) > epsilon:
        fixed_only = epsilon_of(fixed, delta=delta, accountant=accountant)
        raise ReleaseError(
            f"no noise multiplier up to {search[1]:g} keeps {steps} steps at sample rate {sample_rate:.4g} "
            f"within epsilon {epsilon:g} (delta {delta:g}): what is already spent gives {fixed_only:.4g}"
        )
    if spends(low) <= epsilon:
        return search[0]
    # Epsilon falls as the noise grows: keep `high` on the side within budget.
    while high - low > _TOLERANCE:
        middle = (low + high) / 2.0
        if spends(middle) <= epsilon:
            high = middle
        else:
            low = middle
    return math.exp(high)


def appended(history: Sequence[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    """`history` with `entry`, merged into the last entry when the mechanism is the same (as Opacus does)."""
    entries = [(float(s), float(q), int(n)) for s, q, n in history]
    if entries and entries[-1][:2] == (float(entry[0]), float(entry[1])):
        last = entries[-1]
        entries[-1] = (last[0], last[1], last[2] + int(entry[2]))
    else:
        entries.append((float(entry[0]), float(entry[1]), int(entry[2])))
    return entries


def validation_entry(noise_multiplier: float) -> HistoryEntry:
    return (noise_multiplier, 1.0, 1)


def release_loss(
    losses: np.ndarray,
    *,
    loss_clip: float,
    noise_multiplier: float,
    public_count: int,
    sampler: LatticeSampler | None = None,
) -> float:
    """The mean held-out loss as released: per-example losses clipped to `[0, loss_clip]`, summed, rounded
    to the lattice of `LOSS_STEP * loss_clip`, discrete Gaussian noise of sigma `noise_multiplier * loss_clip`
    widened by `1 + LOSS_STEP` (one example moves the rounded sum by at most `loss_clip` plus a step), divided
    by the public held-out count. Clamped at 0 afterwards (post-processing)."""
    if not loss_clip > 0 or not noise_multiplier > 0 or public_count < 1:
        raise ReleaseError(
            f"loss_clip {loss_clip} and noise_multiplier {noise_multiplier} must be positive and public_count "
            f"{public_count} at least 1"
        )
    clipped = np.clip(np.nan_to_num(np.asarray(losses, dtype=np.float64), nan=loss_clip), 0.0, loss_clip)
    step = LOSS_STEP * loss_clip
    sigma = noise_multiplier * (1.0 + LOSS_STEP) / LOSS_STEP
    noise = (sampler or OpenDPSampler()).discrete_gaussian(sigma=sigma, size=1)
    noisy = (round(float(clipped.sum()) / step) + int(noise[0])) * step
    return min(MAX_RELEASED_LOSS, max(0.0, noisy / public_count))
