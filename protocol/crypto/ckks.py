"""CKKS through TenSEAL: the default backend.

Vectors are cut into chunks of `poly_modulus_degree / 2` values (4096 at N = 8192), one ciphertext each.
The default context is add-only (`coeff_mod_bit_sizes = (60, 60)`: one 60-bit data prime plus the special
prime), so the public material is the public key alone: no relinearisation or Galois keys are generated
into it.

Range. A value is encoded as `round(x * 2^scale_bits)` and decoded modulo the data modulus `q`
(`2^sum(bits[:-1])`), so a *sum* must keep `|sum| * 2^scale_bits < q / 2` (Cheon et al., ASIACRYPT 2017,
section 3): past that it wraps to a value of the other sign (`CKKSParams.wrap_bound`), which `decrypt`
refuses. We keep one bit more for noise and give `CKKS_MAX_SUMMANDS` summands their share:
`|x| <= 2^(log2 q - scale_bits - 2 - log2 CKKS_MAX_SUMMANDS)`, 64 with the defaults (4096 summands;
`CKKSParams.max_abs_value`).

Chunks. TenSEAL inflates every ciphertext a chunk holds before anything checks it, so each chunk is parsed
and bounded first (`protocol.crypto.seal_container`).

Error. Measured on this machine at N = 8192, scale 2^40: the largest absolute error over 30 x 4096 fresh
encryptions of values in [-1, 1] was 1.3e-8, and 5.5e-8 for a sum of 64 encryptions of values in
[-256, 256] (it grows like sqrt(count) and does not depend on |x|). `error_bound` states
`count * 2^(18 - scale_bits) * max(1, N / 8192)`, 2.4e-7 per summand at the defaults: a 19x margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal as ts

from protocol.crypto import seal_container
from protocol.crypto.base import EncryptedVector, FloatArray, HEScheme
from protocol.crypto.errors import CiphertextError, KeyMaterialError, MissingSecretKeyError
from protocol.crypto.params import CKKSParams, HEKind

_CONTEXT_ERRORS = (RuntimeError, ValueError, TypeError)

CKKSPayload = list[Any]  # one tenseal.CKKSVector per chunk


def _new_context(params: CKKSParams) -> Any:
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        n_threads=1,  # we chunk ourselves; one thread per process leaves the other cores to the trainer
    )
    context.global_scale = 2.0**params.global_scale_bits
    return context


def _serialize(context: Any, *, secret: bool) -> bytes:
    data: bytes = context.serialize(
        save_public_key=True, save_secret_key=secret, save_galois_keys=False, save_relin_keys=False
    )
    return data


def _max_key_bytes(params: CKKSParams) -> int:
    # public key: 2 polynomials; secret key: 1 more; each N coefficients per prime, 8 bytes each.
    return 3 * params.poly_modulus_degree * len(params.coeff_mod_bit_sizes) * 8 + 65536


def _load_context(params: CKKSParams, data: bytes, *, secret: bool) -> Any:
    what = "secret" if secret else "public"
    if not 0 < len(data) <= _max_key_bytes(params):
        raise KeyMaterialError(f"CKKS {what} context is {len(data)} bytes, at most {_max_key_bytes(params)}")
    try:
        context = ts.context_from(bytes(data), n_threads=1)
        seal = context.seal_context().data
        key_level, data_level = seal.key_context_data(), seal.first_context_data()
        found = (
            key_level.parms().poly_modulus_degree(),
            key_level.total_coeff_modulus_bit_count(),
            data_level.total_coeff_modulus_bit_count(),
            context.global_scale,
        )
    except _CONTEXT_ERRORS as e:
        raise KeyMaterialError(f"CKKS {what} context does not load: {e}") from e
    bits = params.coeff_mod_bit_sizes
    wanted = (params.poly_modulus_degree, sum(bits), sum(bits[:-1]), 2.0**params.global_scale_bits)
    if found != wanted:
        raise KeyMaterialError(
            "CKKS context (poly_modulus_degree, key modulus bits, data modulus bits, scale) is "
            f"{found}, the parameters need {wanted}"
        )
    if not context.has_public_key():
        raise KeyMaterialError(f"CKKS {what} context has no public key")
    if context.is_private() != secret:
        problem = "carries a secret key" if context.is_private() else "has no secret key"
        raise KeyMaterialError(f"CKKS {what} context {problem}; refusing it")
    return context


class CKKSScheme(HEScheme[CKKSPayload]):
    """CKKS (TenSEAL) scheme; build it with `generate`, `from_public` or `from_secret`."""

    kind = HEKind.CKKS

    def __init__(self, params: CKKSParams, context: Any) -> None:
        self._params = params
        self._context = context
        self._public = _serialize(context, secret=False)

    @classmethod
    def generate(cls, params: CKKSParams) -> CKKSScheme:
        return cls(params, _new_context(params))

    @classmethod
    def from_public(cls, params: CKKSParams, public_bytes: bytes) -> CKKSScheme:
        return cls(params, _load_context(params, public_bytes, secret=False))

    @classmethod
    def from_secret(cls, params: CKKSParams, secret_bytes: bytes) -> CKKSScheme:
        return cls(params, _load_context(params, secret_bytes, secret=True))

    @property
    def params(self) -> CKKSParams:
        return self._params

    def public_bytes(self) -> bytes:
        return self._public

    def secret_bytes(self) -> bytes:
        if not self.has_secret_key:
            raise MissingSecretKeyError("this CKKS scheme holds only the public context")
        return _serialize(self._context, secret=True)

    @property
    def has_secret_key(self) -> bool:
        return bool(self._context.is_private())

    @property
    def slots(self) -> int:
        return self._params.slots

    @property
    def max_summands(self) -> int:
        return self._params.max_summands

    @property
    def max_abs_value(self) -> float:
        return self._params.max_abs_value

    @property
    def wrap_bound(self) -> float:
        return self._params.wrap_bound

    def error_bound(self, *, count: int, max_abs: float) -> float:
        # Independent of max_abs within max_abs_value (module docstring); the argument keeps the contract.
        return count * self._params.encoding_error

    # -- backend ------------------------------------------------------------------------------------
    def _encrypt(self, x: FloatArray) -> CKKSPayload:
        slots = self.slots
        return [ts.ckks_vector(self._context, x[i : i + slots].tolist()) for i in range(0, x.size, slots)]

    def _add(self, a: CKKSPayload, b: CKKSPayload) -> CKKSPayload:
        return [u + v for u, v in zip(a, b, strict=True)]

    def _add_into(self, acc: CKKSPayload, b: CKKSPayload) -> None:
        for u, v in zip(acc, b, strict=True):
            u.add_(v)

    def _copy(self, payload: CKKSPayload) -> CKKSPayload:
        return [v.copy() for v in payload]

    def _decrypt(self, ciphertext: EncryptedVector[CKKSPayload], workers: int) -> FloatArray:
        # In this thread, whatever `workers`: a small share of a round (`bench/cloud_decrypt.py`), and
        # workers would need the secret context and every chunk pickled to them.
        # The key is passed explicitly: a vector made by a public-only scheme is linked to that context.
        secret_key = self._context.secret_key()
        parts = [np.asarray(v.decrypt(secret_key), dtype=np.float64) for v in ciphertext.payload]
        return np.concatenate(parts)

    def _dump_chunks(self, payload: CKKSPayload) -> Sequence[bytes]:
        return [v.serialize() for v in payload]

    def _chunk_bytes(self, values: int) -> tuple[int, int]:
        data_primes = len(self._params.coeff_mod_bit_sizes) - 1
        # Two polynomials of N 8-byte coefficients per data prime, plus SEAL's and TenSEAL's headers.
        return 1, 2 * self._params.poly_modulus_degree * data_primes * 8 + 4096

    def _load_chunks(self, chunks: list[memoryview], length: int) -> CKKSPayload:
        payload = []
        slots, params = self.slots, self._params
        wanted = (
            2,
            params.poly_modulus_degree,
            len(params.coeff_mod_bit_sizes) - 1,
            2.0**params.global_scale_bits,
        )
        members = seal_container.members_bytes(
            degree=params.poly_modulus_degree, primes=len(params.coeff_mod_bit_sizes) - 1
        )
        for index, chunk in enumerate(chunks):
            values = min(slots, length - index * slots)
            try:
                seal_container.check_chunk(chunk, values=values, scale=wanted[3], max_members=members)
            except CiphertextError as e:
                raise CiphertextError(f"CKKS chunk {index}: {e}") from e
            try:
                vector = ts.ckks_vector_from(self._context, bytes(chunk))
                size = vector.size()
                inner = vector.ciphertext()
            except _CONTEXT_ERRORS as e:
                raise CiphertextError(f"CKKS chunk {index} does not load: {e}") from e
            if size != values or len(inner) != 1:
                raise CiphertextError(
                    f"CKKS chunk {index} holds {size} values in {len(inner)} ciphertexts, expected {values} in 1"
                )
            ct = inner[0]
            found = (ct.size(), ct.poly_modulus_degree(), ct.coeff_modulus_size(), ct.scale)
            if found != wanted:
                raise CiphertextError(
                    f"CKKS chunk {index} (polynomials, degree, primes, scale) is {found}, expected {wanted}"
                )
            if not ct.is_ntt_form() or ct.is_transparent():
                raise CiphertextError(
                    f"CKKS chunk {index} is not a proper encryption (transparent or not NTT)"
                )
            payload.append(vector)
        return payload
