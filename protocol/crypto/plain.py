"""The plaintext scheme (`HEKind.NONE`): float64 sums in the same envelope, for simulations and for
strategies that need per-client updates. Nothing is hidden; anyone holding the public bytes can decrypt.
Values are bounded by `PlainParams.clip` and sums range-checked against it, as the other schemes' are.

The "key" is a random 32-byte federation id, so that vectors from another federation or run are still
refused by fingerprint, exactly as with the real schemes.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from protocol.crypto import envelope
from protocol.crypto.base import EncryptedVector, FloatArray, HEScheme
from protocol.crypto.errors import CiphertextError, KeyMaterialError
from protocol.crypto.params import HEKind, PlainParams

ID_BYTES = 32
SLOTS = 4096  # values per envelope chunk; only the wire format cares
_WIRE = np.dtype("<f8")


class PlainScheme(HEScheme[FloatArray]):
    """No encryption: `encrypt` copies, `add` adds, `decrypt` reads. Build with `generate` or `from_public`."""

    kind = HEKind.NONE
    requires_secret_to_decrypt = False

    def __init__(self, params: PlainParams, federation_id: bytes) -> None:
        if len(federation_id) != ID_BYTES:
            raise KeyMaterialError(f"plain scheme id must be {ID_BYTES} bytes, got {len(federation_id)}")
        self._params = params
        self._id = bytes(federation_id)

    @classmethod
    def generate(cls, params: PlainParams) -> PlainScheme:
        return cls(params, secrets.token_bytes(ID_BYTES))

    @classmethod
    def from_public(cls, params: PlainParams, public_bytes: bytes) -> PlainScheme:
        return cls(params, public_bytes)

    @classmethod
    def from_secret(cls, params: PlainParams, secret_bytes: bytes) -> PlainScheme:
        return cls(params, secret_bytes)

    @property
    def params(self) -> PlainParams:
        return self._params

    def public_bytes(self) -> bytes:
        return self._id

    def secret_bytes(self) -> bytes:
        return self._id  # there is no secret: the id is all there is

    @property
    def has_secret_key(self) -> bool:
        return True

    @property
    def slots(self) -> int:
        return SLOTS

    @property
    def max_summands(self) -> int:
        return envelope.MAX_COUNT

    @property
    def max_abs_value(self) -> float:
        return self._params.max_abs_value

    def error_bound(self, *, count: int, max_abs: float) -> float:
        # Recursive summation of `count` float64 values: at most (count - 1) eps * sum |x| (Higham, ASNA 4.2).
        return 2.0 * count * count * float(np.finfo(np.float64).eps) * max(max_abs, 1.0)

    def _encrypt(self, x: FloatArray) -> FloatArray:
        return np.array(x, dtype=np.float64)

    def _add(self, a: FloatArray, b: FloatArray) -> FloatArray:
        return a + b

    def _add_into(self, acc: FloatArray, b: FloatArray) -> None:
        np.add(acc, b, out=acc)

    def _copy(self, payload: FloatArray) -> FloatArray:
        return payload.copy()

    def _decrypt(self, ciphertext: EncryptedVector[FloatArray], workers: int) -> FloatArray:
        return ciphertext.payload.copy()

    def _dump_chunks(self, payload: FloatArray) -> Sequence[bytes]:
        raw = payload.astype(_WIRE, copy=False).tobytes()
        step = SLOTS * _WIRE.itemsize
        return [raw[i : i + step] for i in range(0, len(raw), step)]

    def _chunk_bytes(self, values: int) -> tuple[int, int]:
        return values * _WIRE.itemsize, values * _WIRE.itemsize

    def _load_chunks(self, chunks: list[memoryview], length: int) -> FloatArray:
        values = np.frombuffer(b"".join(chunks), dtype=_WIRE).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise CiphertextError(f"plain vector value {int(bad[0])} is {values[bad[0]]!r}, not finite")
        return values
