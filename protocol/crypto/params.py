"""Parameters of the homomorphic encryption schemes, as they travel in a `FederationSpec`.

These are wire models: every party checks a ciphertext against them before deserialising it. Each also
says what its encoding asks of DP noise (`lattice_step`, `value_bound`, `noise_distribution`), so the noise
code reads the parameters instead of asking which scheme they belong to.
"""

from __future__ import annotations

import math
import sys
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.distributions import Distribution


class HEKind(StrEnum):
    """Which additively homomorphic scheme protects the uploads."""

    CKKS = "ckks"
    PAILLIER = "paillier"
    NONE = "none"  # plaintext sums: only for simulation and for strategies that need per-client updates


#: The noise lattice of schemes with real-valued slots (CKKS, plaintext): a power of two, so that every
#: multiple of it below 2^53 steps is an exact float64, and far below any clip norm (the rounding of a
#: sum to it adds `sqrt(d)` steps to the sensitivity: `protocol.aggregation.central_sigma`).
FINE_NOISE_STEP = 2.0**-40

#: The smallest Paillier modulus accepted: 2048 bits, NIST SP 800-57 Part 1's floor for factoring-based
#: keys (112-bit security) since 2014; 1024-bit moduli have been within reach of factoring efforts for years.
MIN_PAILLIER_KEY_BITS = 2048


class SchemeParams(BaseModel):
    """What every scheme's parameters tell the noise code. The defaults fit a scheme with real-valued
    slots (CKKS, plaintext): noise of any distribution and any size goes in as drawn."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @property
    def lattice_step(self) -> float | None:
        """Noise added before encryption must be a multiple of this (None: any real value)."""
        return None

    @property
    def value_bound(self) -> float | None:
        """Every coordinate, noise included, must lie in `[-value_bound, value_bound]` (None: no bound)."""
        return None

    @property
    def rounding_step(self) -> float | None:
        """The lattice a hospital rounds its clipped update onto at random before encrypting
        (`protocol.rounding`); None: the scheme's encoding rounds it (to the nearest step) or keeps it."""
        return None

    @property
    def noise_step(self) -> float:
        """The lattice DP noise is drawn on (`protocol.samplers`: integer noise times this step): the
        scheme's quantisation step where it has one, else `FINE_NOISE_STEP`."""
        return self.lattice_step or FINE_NOISE_STEP

    def noise_distribution(self, *, distributed: bool) -> Distribution | None:
        """The distribution the scheme requires of the noise (`distributed`: shares added before
        encryption, and the cloud's top-up of them); None: the one the spec's mechanism names."""
        return None

    @property
    def max_summands(self) -> int | None:
        """Most encryptions one sum may hold before its values could overflow (None: no limit): a round
        plans at most this many hospitals (`cloud_server.plans`)."""
        return None

    @property
    def max_abs_value(self) -> float:
        """Largest |value| one encryption may hold, so that `max_summands` of them still decode."""
        return math.inf


#: Most encryptions one CKKS sum may hold; the value range is divided among them (`CKKSParams.max_abs_value`).
CKKS_MAX_SUMMANDS = 4096


class CKKSParams(SchemeParams):
    """TenSEAL CKKS context. The default is add-only: one data prime, no multiplications.

    `[60, 60]` leaves no room to rescale after a multiplication, so a ciphertext cannot be multiplied by a
    plaintext scalar; weights are applied by clients before encrypting (see DESIGN.md, Cryptography).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal[HEKind.CKKS] = HEKind.CKKS
    poly_modulus_degree: Literal[4096, 8192, 16384, 32768] = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    global_scale_bits: int = Field(default=40, ge=20, le=59)

    @field_validator("coeff_mod_bit_sizes")
    @classmethod
    def _check_moduli(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 2:
            raise ValueError(f"coeff_mod_bit_sizes needs at least two primes, got {list(value)}")
        if any(not 20 <= bits <= 60 for bits in value):
            raise ValueError(f"coeff_mod_bit_sizes entries must lie in [20, 60], got {list(value)}")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> CKKSParams:
        # Upper bounds on log2(q) for 128-bit security (HomomorphicEncryption.org standard, table 1).
        max_bits = {4096: 109, 8192: 218, 16384: 438, 32768: 881}[self.poly_modulus_degree]
        total = sum(self.coeff_mod_bit_sizes)
        if total > max_bits:
            raise ValueError(
                f"coeff_mod_bit_sizes sum to {total} bits, above the {max_bits} bits that "
                f"poly_modulus_degree={self.poly_modulus_degree} allows at 128-bit security"
            )
        return self

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def encoding_error(self) -> float:
        """Most one coordinate of one fresh encryption can decrypt away from its value: the encoding's
        rounding plus the encryption noise, `2^(18 - scale_bits)` per summand at N = 8192 (the bound
        `CKKSScheme.error_bound` states; see `protocol.crypto.ckks`, Error), growing with N."""
        return 2.0 ** (18 - self.global_scale_bits) * max(1.0, self.poly_modulus_degree / 8192)

    @property
    def wrap_bound(self) -> float:
        """The largest |value| a decryption can show: past it a sum wraps around the data modulus `q` and
        decrypts to a value of the other sign (`q / 2 / 2^scale_bits`; Cheon et al., ASIACRYPT 2017, s. 3)."""
        return 2.0 ** (sum(self.coeff_mod_bit_sizes[:-1]) - 1 - self.global_scale_bits)

    @property
    def max_summands(self) -> int:
        return CKKS_MAX_SUMMANDS

    @property
    def max_abs_value(self) -> float:
        """The share of the range below the wrap point each of `max_summands` summands gets, with one bit
        kept for the noise: `2^(log2 q - scale_bits - 2 - log2 max_summands)`, capped at 2^30."""
        data_bits = sum(self.coeff_mod_bit_sizes[:-1])
        spare = data_bits - self.global_scale_bits - 2 - int(math.log2(CKKS_MAX_SUMMANDS))
        return float(2 ** min(spare, 30))


class PaillierParams(SchemeParams):
    """Packed (BatchCrypt-style) Paillier: fixed-point slots packed into one big plaintext.

    Each value is clipped to `[-clip, clip]` and quantised to `quant_bits` bits. Each slot keeps
    `ceil(log2(max_clients))` extra bits so that a sum of up to `max_clients` encryptions never carries
    into the next slot. `rounding` says how a hospital's clipped update reaches the quantisation lattice:
    `nearest` (the encoding rounds each value to its nearest step) or `stochastic` (the hospital rounds it
    at random, without bias and with a certain norm bound, before its noise share: `protocol.rounding`),
    which costs the sensitivity far less at a coarse step (`protocol.sensitivity`) and so lets a federation
    quantise to fewer bits (`FederationSpec.compression`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal[HEKind.PAILLIER] = HEKind.PAILLIER
    key_bits: Literal[2048, 3072, 4096] = 2048
    quant_bits: int = Field(default=16, ge=4, le=32)
    clip: float = Field(default=1.0, gt=0.0, le=1e6)
    max_clients: int = Field(default=64, ge=1, le=1 << 20)
    rounding: Literal["nearest", "stochastic"] = "nearest"
    #: Hospitals add pairwise and self masks to their values in the ring `Z_(2^ring_bits)` before
    #: encrypting (`protocol.secagg`); a single upload, or any sum other than a whole cohort's, then
    #: decrypts to uniform noise. Costs `headroom_bits + 1` bits per slot.
    masking: bool = False

    @field_validator("key_bits", mode="before")
    @classmethod
    def _check_key_bits(cls, value: object) -> object:
        if isinstance(value, int) and value < MIN_PAILLIER_KEY_BITS:
            raise ValueError(
                f"key_bits must be at least {MIN_PAILLIER_KEY_BITS} (2048, 3072 or 4096), got {value}: "
                "a smaller Paillier modulus can be factored"
            )
        return value

    def ring_problem(self) -> str | None:
        """Why these parameters cannot mask (slots past the 64 bits the encoding holds), or None. Checked by
        `FederationSpec` on the bits it is given, by `protocol.compression` on the bits it plans (with
        `compression.bits: auto` the submitted `quant_bits` is only a placeholder), and by the scheme."""
        if self.masking and self.slot_bits > 64:
            return (
                f"masking needs slots of {self.slot_bits} bits at quant_bits={self.quant_bits} and "
                f"max_clients={self.max_clients}, above the 64 this encoding holds; lower either"
            )
        return None

    @property
    def headroom_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.max_clients))) if self.max_clients > 1 else 1

    @property
    def ring_bits(self) -> int:
        """Bits of the exact ring masked values live in: a whole sum of `max_clients` quantised values fits
        (`quant_bits + headroom_bits`), plus one guard bit, so that values whose masks did not cancel land
        outside the range a true sum can reach in at least half of the ring."""
        return self.quant_bits + self.headroom_bits + 1

    @property
    def slot_bits(self) -> int:
        """Bits per packed slot: a sum of `max_clients` values (or, masked, of ring residues) never carries
        into the next slot."""
        if self.masking:
            return self.ring_bits + self.headroom_bits
        return self.quant_bits + self.headroom_bits

    @property
    def slots(self) -> int:
        # The packed plaintext must stay below n, whose top bit is key_bits - 1.
        return (self.key_bits - 1) // self.slot_bits

    @property
    def step(self) -> float:
        """Value of one quantisation step: the largest error a single encoded value can carry is step / 2."""
        return self.clip / ((1 << (self.quant_bits - 1)) - 1)

    @property
    def encoding_error(self) -> float:
        """Most one value in `[-clip, clip]` moves when it is encoded: half a step of rounding to the
        nearest step (a whole step when rounded at random), plus float64 rounding of `x / step`."""
        rounding = self.step if self.rounding == "stochastic" else self.step / 2
        return rounding + 8 * sys.float_info.epsilon * self.clip

    @property
    def rounding_step(self) -> float | None:
        return self.step if self.rounding == "stochastic" else None

    @property
    def max_summands(self) -> int:
        return self.max_clients

    @property
    def max_abs_value(self) -> float:
        return self.clip

    @property
    def lattice_step(self) -> float | None:
        """Shares are whole quantisation steps, so that they pack exactly."""
        return self.step

    @property
    def value_bound(self) -> float | None:
        """The fixed-point range: packing would clip a coordinate outside it, and the noise with it."""
        return self.clip

    def noise_distribution(self, *, distributed: bool) -> Distribution | None:
        """Distributed shares (and the cloud's top-up of them) are Skellam on the lattice, whose sum stays
        on it and is Skellam again (Agarwal, Kairouz, Liu 2021, arXiv:2110.04995); noise the cloud adds
        alone after decrypting may follow any distribution."""
        return Distribution.SKELLAM if distributed else None


#: The widest range a plaintext value may be given: CKKS's per-value range at its default parameters
#: (`CKKSParams.max_abs_value`), so that a plaintext twin of any federation's uploads fits, and a sum of
#: `envelope.MAX_COUNT` of them, averaged, stays far inside float32.
MAX_PLAIN_CLIP = float(2**30)


class PlainParams(SchemeParams):
    """No encryption. Allowed only where every party may legitimately see per-client updates.

    Values are range-checked as the encrypted schemes' are: an upload holds values in `[-clip, clip]`, a
    decrypted sum of `n` uploads in `n` times that, so a sum holding a value no upload can (a hospital that
    sent 1e300, which overflows the float32 adapter) is refused and costs its edge, not the round. An honest
    hospital's weighted, clipped delta has no coordinate above `central_dp.clip_norm` (the spec refuses a
    `clip` below it); setting `clip` to the clip norm makes the check tight.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal[HEKind.NONE] = HEKind.NONE
    clip: float = Field(default=MAX_PLAIN_CLIP, gt=0.0, le=MAX_PLAIN_CLIP)

    @property
    def max_abs_value(self) -> float:
        return self.clip

    @property
    def encoding_error(self) -> float:
        """Nothing: a float64 upload travels and decrypts bit for bit."""
        return 0.0


HEParams = Annotated[CKKSParams | PaillierParams | PlainParams, Field(discriminator="kind")]
