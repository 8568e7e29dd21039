"""Client-level sensitivity: how far one hospital can move a sum the cloud decrypts and releases.

A hospital clips its delta to `C` (L2 for Gaussian noise, L1 for Laplace) and weights it by `w <= 1`
(DP-FedAvg, McMahan et al. 2018, arXiv:1710.06963), but the cloud decrypts the *encoded* upload. Encoding
moves each of the `d` coordinates by at most `e = HEParams.encoding_error`: packed Paillier rounds to the
nearest fixed-point step (`e` is half a step, and the rounding is deterministic, so an adversary can make
it lengthen every coordinate); CKKS's error is bounded by its scheme's bound for one summand; the
plaintext scheme moves nothing. With `|r_i| <= e`, the triangle inequality gives
`||w x + r||_1 <= w C + d e` and `||w x + r||_2 <= w C + sqrt(d) e`: that, not `C`, is the sensitivity of
one upload. The Skellam mechanism under packed Paillier counts the same rounding in quantisation steps
(Agarwal, Kairouz, Liu 2021, arXiv:2110.04995, Section 4).

Under packed Paillier with `rounding: stochastic` the hospital rounds its weighted, clipped update onto the
lattice of step `g` at random and draws again until the rounded vector's L2 norm is at most
`rounding_bound(w C)`, `sqrt(c^2 + g^2 d / 4 + t g (c + g sqrt(d) / 2))` at `c = w C` and the tail
`t = sqrt(2 ln(1 / beta)) = 7.4` of `beta = 2^-40` (never more than `c + g sqrt(d)`; Kairouz, Liu, Steinke
2021, arXiv:2102.06387, section 4; `protocol.rounding`): the upload's L2 reach is that bound, which holds
with certainty, and the encoding adds nothing more (the update is on the lattice). Its L1 reach is
`w C + d g`, every coordinate moving by less than a step.

A late upload (`FederationSpec.late_uploads`) is decrypted in its bucket and multiplied by `decay ** s`
afterwards, so its whole reach, rounding included, is scaled by that factor. A hospital can be in one
release fresh and late once for each earlier round the spec allows, so its reach is the sum over its
uploads of `factor * upload_sensitivity(w)` (`factor * (min(w, 1) C + slack)` where the encoding rounds).

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from protocol.crypto.params import HEParams
from protocol.messages import FederationSpec, LateUploadConfig, NoiseMechanism
from protocol.rounding import rounding_bound

NormOrder = Literal[1, 2]


def norm_order(mechanism: NoiseMechanism) -> NormOrder:
    """The norm the clip and the sensitivity are measured in: L1 for Laplace noise, L2 otherwise."""
    return 1 if mechanism is NoiseMechanism.LAPLACE else 2


def encoding_error(he: HEParams) -> float:
    """Most one coordinate of one upload moves when the scheme encodes it (`HEParams.encoding_error`: half
    a step under packed Paillier, CKKS's bound for one summand, 0 in plaintext)."""
    return he.encoding_error


def encoding_slack(he: HEParams, *, clip_norm: float, size: int, ord: NormOrder) -> float:
    """How much encoding can lengthen one upload of `size` coordinates clipped to `clip_norm`, in the norm
    of order `ord`: at weight 1, the most it adds."""
    return upload_sensitivity(he, clip_norm=clip_norm, size=size, ord=ord) - clip_norm


def upload_sensitivity(
    he: HEParams, *, clip_norm: float, size: int, ord: NormOrder, weight: float = 1.0
) -> float:
    """How far one upload clipped to `clip_norm` and weighted by `weight` moves a decrypted sum, in the
    units of the deltas: `min(weight, 1) C` plus the encoding's slack, or under randomised rounding (L2)
    the norm bound the hospital's rounding is conditioned on. A hospital rounds to this bound
    (`client_agent.update.contribution`), so what it encodes and what the ledger charges cannot differ."""
    reach = min(weight, 1.0) * clip_norm
    step = he.rounding_step
    if step is not None and ord == 2:
        return rounding_bound(reach, step=step, size=size)
    return reach + encoding_error(he) * (size if ord == 1 else math.sqrt(size))


@dataclass(frozen=True)
class Upload:
    """One upload inside a release, as its manifest line says: whose, its weight, and `decay ** s` for an
    upload `s` rounds late (1 for a fresh one)."""

    client_id: str
    weight: float
    factor: float = 1.0


def release_sensitivity(
    uploads: Iterable[Upload], *, he: HEParams, clip_norm: float, size: int, ord: NormOrder
) -> float:
    """In clip norms, the most one hospital moves a release holding `uploads`: the largest sum over one
    hospital's uploads of `factor * upload_sensitivity(weight) / C` (`min(weight, 1) C + slack` where the
    encoding rounds). At least one full upload's reach, the bound for a hospital that could have taken part
    at weight 1."""

    def one(weight: float) -> float:
        return upload_sensitivity(he, clip_norm=clip_norm, size=size, ord=ord, weight=weight)

    single = one(1.0)
    reach: dict[str, float] = {}
    for u in uploads:
        reach[u.client_id] = reach.get(u.client_id, 0.0) + u.factor * one(u.weight)
    return max([single, *reach.values()]) / clip_norm


def late_factor(late: LateUploadConfig | None, *, round_: int) -> float:
    """The most weight one hospital's uploads can carry in round `round_`'s release: 1 for its fresh upload
    plus `decay ** s` for each `1 <= s <= min(round_, max_staleness)` (an upload can only be late for a
    round that exists, so round 0 has none)."""
    if late is None:
        return 1.0
    return sum(late.factor(s) for s in range(min(max(round_, 0), late.max_staleness) + 1))


def worst_sensitivity(spec: FederationSpec, *, size: int, round_: int) -> float:
    """In clip norms, the most one hospital can move round `round_`'s release under `spec`: a fresh upload
    and a late one for every earlier round `late_uploads` allows, each at weight 1, encoding included."""
    dp = spec.central_dp
    single = upload_sensitivity(spec.he, clip_norm=dp.clip_norm, size=size, ord=norm_order(dp.mechanism))
    return single / dp.clip_norm * late_factor(spec.late_uploads, round_=round_)


def lattice_sensitivities(*, l2: float, size: int) -> tuple[float, float]:
    """(L1, L2) sensitivity of an integer vector with `size` coordinates and L2 norm at most `l2`: an integer
    vector has `||q||_1 <= ||q||_2^2` (each `|q_i| <= q_i^2`) and `||q||_1 <= sqrt(size) ||q||_2`."""
    return min(l2 * l2, math.sqrt(size) * l2), l2
