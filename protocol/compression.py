"""Upload compression: the fewest quantisation bits a packed Paillier upload needs for the DP noise it
carries (seed 001's "INT8" transport, issue 22 item 4).

A hospital rounds its clipped update at random onto the lattice of step `g = clip / (2^(b-1) - 1)` for `b`
quantisation bits (`protocol.rounding`), so each coordinate of one upload carries an error of mean square
at most `g^2 / 4 / (1 - beta)` (`beta = 2^-40`, the conditioning's), and a release that sums `n` uploads
fresh and `n` in each late bucket `s` rounds old weighted `decay^s` (`FederationSpec.late_uploads`) at most
`W g^2 / 4 / (1 - beta)` with `W = n (1 + sum_s decay^(2s))`: independent of the data, like the DP noise of
std `sigma = z C` the release carries anyway. Fewer bits put more slots in one Paillier plaintext
(`PaillierParams.slots`), so fewer ciphertexts per upload, until the rounding's error is no longer small
beside the noise or its sensitivity inflation no longer small beside `C`. `choose_quant_bits` returns the
fewest `b` such that

  (a) the release's rounding error is a small part of the noise:
      `sqrt(W / (1 - beta)) g / 2 <= error_fraction sigma`;
  (b) the sensitivity the ledger charges grows little: `rounding_bound(C) - C <= inflation_fraction C`,
      `rounding_bound(C) = min(sqrt(C^2 + g^2 d / 4 + t g (C + g sqrt(d) / 2)), C + g sqrt(d))` (Kairouz, Liu,
      Steinke 2021, arXiv:2102.06387, section 4, at `beta = 2^-40`: the tail `t = sqrt(2 ln(1 / beta)) = 7.4`);
  (c) the value range holds the update and the noise shares with the overflow margin the spec keeps:
      `clip >= (C + SHARE_TAIL_SIGMAS s) (1 + RANGE_MARGIN)` for the largest share std `s` (0 without
      distributed noise); the margin holds a coordinate that float64 clipping left a few ulps past `C`.

So the error a compressed federation states is: the published sum differs from the sum of the clipped,
weighted updates by its DP noise plus a rounding error of root mean square at most `error_fraction` times
the noise's std on every coordinate, and unbiased up to the conditioning: the error's mean, as a whole
vector in L2, is at most `V (g / 2) sqrt(beta) / (1 - beta)` with `V = n sum_s decay^s`
(`protocol.rounding.rounding_bias` per upload), which is `sqrt(V^2 beta / W)` of the rounding's own std
`sqrt(W) g / 2`: below `2^-10` of it for fresh sums (`n <= 2^20`), below `2^-6` with any late buckets
(`V^2 <= W n (S + 1)` by Cauchy-Schwarz, `S + 1 <= 101`). Its epsilon is charged for a sensitivity at most
`(1 + inflation_fraction) C`.

The cloud plans it when it creates a federation (`plan_compression`, with the adapter's size `d`), and the
stored spec carries the chosen `he.quant_bits`, `he.clip` and `he.rounding`, which hospitals follow.

Pure: no I/O, nothing imported from outside `protocol`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from protocol.crypto.params import PaillierParams
from protocol.messages import (
    SHARE_TAIL_SIGMAS,
    Compression,
    FederationSpec,
    LateUploadConfig,
    max_share_std,
    schedule_multiplier,
)
from protocol.rounding import ROUNDING_BETA, rounding_bound

#: The bits `PaillierParams.quant_bits` allows.
MIN_QUANT_BITS, MAX_QUANT_BITS = 4, 32

#: The planned range's margin over what a clipped coordinate and its noise share need, as a fraction of it.
#: `protocol.noise.clip` scales a vector by `C / ||x||` in float64, so a one-hot delta lands a few ulps past
#: `C` (18.5 * (0.3 / 18.5) is 0.30000000000000004): a range of exactly `C` refused that hospital. `2^-20`
#: is far above float64's error and far below anything the step or the sensitivity notice; the ledger still
#: charges the clip norm `C`, which the hospital's conditional rounding holds the upload to regardless.
RANGE_MARGIN = 2.0**-20


class CompressionError(ValueError):
    """A compression that cannot be met: `field` names the spec's setting at fault, `value` its value (the
    cloud answers it with a 422 `invalid_request` naming the field)."""

    def __init__(self, message: str, *, field: str, value: Any, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.detail = detail


@dataclass(frozen=True)
class QuantPlan:
    """What `quant_bits` at `clip` costs an aggregate of `summands` uploads of `size` values."""

    quant_bits: int
    clip: float  # the value range: every coordinate, noise share included, lies in [-clip, clip]
    step: float  # g = clip / (2^(quant_bits - 1) - 1)
    error_std: float  # sqrt(W / (1 - beta)) g / 2: the rounding's rms on a coordinate of a release
    noise_std: float  # sigma: the DP noise's std on a coordinate of the sum
    sensitivity: float  # rounding_bound(C): one upload's L2 reach, what the ledger charges
    clip_norm: float

    @property
    def error_ratio(self) -> float:
        """(a): the rounding error's std over the noise's."""
        return self.error_std / self.noise_std

    @property
    def inflation(self) -> float:
        """(b): the sensitivity's growth over `C`, as a fraction of `C`."""
        return self.sensitivity / self.clip_norm - 1.0


def needed_range(*, clip_norm: float, share_std: float) -> float:
    """The range one coordinate of a clipped update (at most `C`) plus a noise share out to
    `SHARE_TAIL_SIGMAS` of its std needs (the margin `FederationSpec` checks)."""
    return clip_norm + SHARE_TAIL_SIGMAS * share_std


def value_range(*, clip_norm: float, share_std: float) -> float:
    """(c): the range `auto` plans, `needed_range` with `RANGE_MARGIN` over it for float64's clipping."""
    return needed_range(clip_norm=clip_norm, share_std=share_std) * (1.0 + RANGE_MARGIN)


def release_weight(late: LateUploadConfig | None, *, rounds: int) -> float:
    """`1 + sum_s decay^(2s)`: a release's rounding variance over one bucket's, for the fresh sum and a late
    bucket for each `1 <= s <= min(max_staleness, rounds - 1)` (each decrypted alone and weighted `decay^s`,
    so its rounding variance is `decay^(2s)` of a fresh sum's)."""
    if late is None:
        return 1.0
    return sum(late.factor(s) ** 2 for s in range(min(late.max_staleness, max(rounds - 1, 0)) + 1))


def quant_plan(
    quant_bits: int, *, clip: float, clip_norm: float, size: int, noise_std: float, summands: float
) -> QuantPlan:
    """The error and the sensitivity of rounding at random to `quant_bits` bits over `[-clip, clip]`, for a
    release of `summands` uploads, each counted by its weight squared (`W`)."""
    step = clip / ((1 << (quant_bits - 1)) - 1)
    return QuantPlan(
        quant_bits=quant_bits,
        clip=clip,
        step=step,
        error_std=math.sqrt(summands / (1.0 - ROUNDING_BETA)) * step / 2.0,
        noise_std=noise_std,
        sensitivity=rounding_bound(clip_norm, step=step, size=size),
        clip_norm=clip_norm,
    )


def choose_quant_bits(
    *,
    clip_norm: float,
    size: int,
    noise_std: float,
    summands: float,
    error_fraction: float,
    inflation_fraction: float,
    share_std: float = 0.0,
    clip: float | None = None,
) -> QuantPlan:
    """The fewest quantisation bits, over the range `clip` (None: the least range that holds the update and
    the noise shares, `value_range`), such that a release of `summands` uploads (each counted by its weight
    squared, `W`) of `size` values clipped to `clip_norm` and rounded at random carries a rounding error of
    root mean square `sqrt(W / (1 - beta)) g / 2` at most `error_fraction * noise_std`, and one upload's sensitivity `rounding_bound(C)` is at most
    `(1 + inflation_fraction) C` (the module docstring states the three conditions).

    Raises `CompressionError` (field `he.quant_bits`) when even `MAX_QUANT_BITS` bits are too few, or
    (field `he.clip`) when `clip` is below the range the update and the shares need."""
    if not (noise_std > 0 and math.isfinite(noise_std)):
        raise CompressionError(
            f"compression sizes the rounding against the DP noise: its std must be positive, got {noise_std}",
            field="central_dp.noise_multiplier",
            value=noise_std,
        )
    least = needed_range(clip_norm=clip_norm, share_std=share_std)
    if clip is None:
        clip = value_range(clip_norm=clip_norm, share_std=share_std)
    elif clip < least:
        raise CompressionError(
            f"he.clip {clip:g} is below the {least:.6g} a coordinate needs (clip_norm plus "
            f"{SHARE_TAIL_SIGMAS:g} noise share std)",
            field="he.clip",
            value=clip,
        )
    for bits in range(MIN_QUANT_BITS, MAX_QUANT_BITS + 1):
        plan = quant_plan(
            bits, clip=clip, clip_norm=clip_norm, size=size, noise_std=noise_std, summands=summands
        )
        if plan.error_ratio <= error_fraction and plan.inflation <= inflation_fraction:
            return plan
    raise CompressionError(
        f"no quant_bits up to {MAX_QUANT_BITS} keeps the rounding error of {summands} uploads within "
        f"{error_fraction:g} of the noise std {noise_std:.6g} and the sensitivity within "
        f"{1 + inflation_fraction:g} C at {size} values over [-{clip:g}, {clip:g}]",
        field="he.quant_bits",
        value=MAX_QUANT_BITS,
    )


def aggregate_noise_std(spec: FederationSpec) -> float:
    """sigma: the std of the DP noise on a sum in the least noisy round the schedule plans, `z_t C`."""
    dp = spec.central_dp
    last = max(spec.rounds - 1, 0)
    smallest = min(schedule_multiplier(dp, round_index=t, rounds=spec.rounds) for t in (0, last))
    return smallest * dp.clip_norm


def _compressed(spec: FederationSpec) -> tuple[Compression, PaillierParams]:
    """`spec`'s compression and its packed Paillier parameters (`FederationSpec` refuses compression under
    another scheme; this narrows the types and refuses a spec without compression)."""
    compression, he = spec.compression, spec.he
    if compression is None or not isinstance(he, PaillierParams):
        raise CompressionError(
            f"no compression to plan under he.kind {he.kind.value!r}: set compression and he.kind 'paillier'",
            field="compression",
            value=None if compression is None else compression.bits,
        )
    return compression, he


def spec_plan(spec: FederationSpec, *, layout_size: int, clip: float | None = None) -> QuantPlan:
    """`choose_quant_bits` for `spec`'s compression: its clip norm, `layout_size` values, the least noisy
    round's noise, `he.max_clients` uploads a sum and a release of the fresh sum and its late buckets
    (`release_weight`), its largest noise share."""
    compression, he = _compressed(spec)
    dp = spec.central_dp
    shares = max_share_std(dp, min_clients=spec.min_clients_per_edge) if dp.distributed else 0.0
    return choose_quant_bits(
        clip_norm=dp.clip_norm,
        size=layout_size,
        noise_std=aggregate_noise_std(spec),
        summands=he.max_clients * release_weight(spec.late_uploads, rounds=spec.rounds),
        error_fraction=compression.error_fraction,
        inflation_fraction=compression.inflation_fraction,
        share_std=shares,
        clip=clip,
    )


def plan_compression(spec: FederationSpec, *, layout_size: int) -> FederationSpec:
    """`spec` as a federation of adapters of `layout_size` values runs it. Without `compression`, as it
    is. With `compression.bits` `auto`, with `he.quant_bits` and `he.clip` set to the fewest bits and the
    least range (`spec_plan`) and `he.rounding` `stochastic`; with `given`, as it is once its own bits meet
    the tolerances at its own `he.clip`.

    Raises `CompressionError` naming the field at fault: `he.quant_bits` with the given bits when they are
    too few (the fewest that would do in `detail`), `he.clip` when the range is too narrow, or the spec's
    field that refuses the planned parameters (masking's ring past 64 bits)."""
    if spec.compression is None:
        return spec
    compression, he = _compressed(spec)
    if compression.bits == "given":
        plan = spec_plan(spec, layout_size=layout_size, clip=he.clip)
        if he.quant_bits < plan.quant_bits:
            given = quant_plan(
                he.quant_bits,
                clip=he.clip,
                clip_norm=plan.clip_norm,
                size=layout_size,
                noise_std=plan.noise_std,
                summands=he.max_clients * release_weight(spec.late_uploads, rounds=spec.rounds),
            )
            raise CompressionError(
                f"he.quant_bits {he.quant_bits} is too few for this federation's noise at {layout_size} values: "
                f"its rounding error is {given.error_ratio:.3g} of the noise std (at most "
                f"{compression.error_fraction:g}) and it inflates the sensitivity by {given.inflation:.3g} C "
                f"(at most {compression.inflation_fraction:g}); the fewest bits that do are {plan.quant_bits}",
                field="he.quant_bits",
                value=he.quant_bits,
                detail={"fewest_quant_bits": plan.quant_bits},
            )
        return spec
    plan = spec_plan(spec, layout_size=layout_size)
    fields = {"quant_bits": plan.quant_bits, "clip": plan.clip, "rounding": "stochastic"}
    planned_range = f"the planned {plan.quant_bits} bits over [-{plan.clip:.6g}, {plan.clip:.6g}] are refused"
    try:
        planned = FederationSpec.model_validate(spec.model_dump() | {"he": he.model_dump() | fields})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "he"
        raise CompressionError(f"{planned_range}: {first['msg']}", field=where, value=plan.quant_bits) from e
    # The spec's validator leaves an `auto` spec's ring to the planned bits: checked here.
    ring = planned.he.ring_problem() if isinstance(planned.he, PaillierParams) else None
    if ring is not None:
        raise CompressionError(f"{planned_range}: {ring}", field="he.quant_bits", value=plan.quant_bits)
    return planned
