"""`HEScheme`: the one seam between fedlora and its additively homomorphic encryption backends.

A scheme is built from parameters and key material (see `protocol.crypto.factory`). Clients and edges hold
a public-only scheme: they can `encrypt`, `add`, `serialize` and `deserialize`. The cloud holds the secret
and can `decrypt`. The base class owns every check that does not depend on the backend (plaintext shape and
range, key and length of operands, summand count, the envelope); backends implement the `_`-methods.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import numpy.typing as npt

from protocol.crypto import envelope
from protocol.crypto.errors import (
    CiphertextError,
    CryptoError,
    DecryptionRangeError,
    MissingSecretKeyError,
    PackingError,
)
from protocol.crypto.obfuscators import default_workers
from protocol.crypto.params import CKKSParams, HEKind, PaillierParams, PlainParams

PayloadT = TypeVar("PayloadT")
AnyParams = CKKSParams | PaillierParams | PlainParams
FloatArray = npt.NDArray[np.float64]
UIntArray = npt.NDArray[np.uint64]

_FINGERPRINT_DOMAIN = b"fedlora/he-key/v1\x00"


def decrypt_workers(workers: int | None) -> int:
    """The worker processes a decryption may use: `workers`, or every core this process may run on."""
    if workers is None:
        return default_workers()
    if workers < 1:
        raise CryptoError(f"workers must be >= 1, got {workers}")
    return workers


def key_fingerprint(params: AnyParams, public_bytes: bytes) -> bytes:
    """SHA-256 over the parameters and the public key: two schemes share it only if their ciphertexts mix."""
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN)
    digest.update(params.model_dump_json().encode())
    digest.update(b"\x00")
    digest.update(public_bytes)
    return digest.digest()


@dataclass(eq=False)
class EncryptedVector(Generic[PayloadT]):
    """An encrypted vector of `length` values, the sum of `count` encryptions.

    `payload` is the backend's representation (TenSEAL vectors, Paillier integers, a float array); only
    the scheme that made it should touch it.
    """

    kind: HEKind
    fingerprint: bytes
    length: int
    count: int
    payload: PayloadT


class HEScheme(ABC, Generic[PayloadT]):
    """An additively homomorphic scheme bound to one key and one parameter set."""

    kind: ClassVar[HEKind]
    #: False only for the plaintext scheme, where anyone holding the public material can read a sum.
    requires_secret_to_decrypt: ClassVar[bool] = True

    # -- key material -------------------------------------------------------------------------------
    # Each backend takes its own parameter class (`factory.SCHEMES` pairs them by `kind`).
    @classmethod
    @abstractmethod
    def generate(cls, params: Any) -> Self:
        """A new key pair."""

    @classmethod
    @abstractmethod
    def from_public(cls, params: Any, public_bytes: bytes) -> Self:
        """The scheme from `public_bytes()`: encrypt, add and (de)serialise, never decrypt."""

    @classmethod
    @abstractmethod
    def from_secret(cls, params: Any, secret_bytes: bytes) -> Self:
        """The scheme from `secret_bytes()`, able to decrypt."""

    @property
    @abstractmethod
    def params(self) -> AnyParams: ...

    @abstractmethod
    def public_bytes(self) -> bytes:
        """What clients and edges receive. Never contains secret material."""

    @abstractmethod
    def secret_bytes(self) -> bytes:
        """The secret key (seal it with `keystore.seal_secret`). Raises `MissingSecretKeyError` if absent."""

    @property
    @abstractmethod
    def has_secret_key(self) -> bool: ...

    @cached_property
    def fingerprint(self) -> bytes:
        """32-byte SHA-256 of the parameters and public key; every ciphertext carries it."""
        return key_fingerprint(self.params, self.public_bytes())

    # -- capacity -----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def slots(self) -> int:
        """Values per ciphertext chunk."""

    @property
    @abstractmethod
    def max_summands(self) -> int:
        """Most encryptions one sum may hold before it could overflow."""

    @property
    @abstractmethod
    def max_abs_value(self) -> float:
        """Largest |value| `encrypt` accepts (`math.inf` when unbounded)."""

    @property
    def wrap_bound(self) -> float:
        """Largest |value| a decryption can show before the plaintext space wraps (`math.inf`: it cannot)."""
        return math.inf

    @abstractmethod
    def error_bound(self, *, count: int, max_abs: float) -> float:
        """Largest absolute error of any value of `decrypt` of a sum of `count` encryptions of vectors
        whose values lie in `[-max_abs, max_abs]`."""

    def precompute(self, length: int) -> None:
        """Do now the data-independent work of encrypting a vector of `length` values (call it while the
        client trains). The default does nothing."""

    # -- operations ---------------------------------------------------------------------------------
    def clip_vector(self, vector: npt.ArrayLike) -> FloatArray:
        """Clamp values into `[-max_abs_value, max_abs_value]`; non-finite values still raise."""
        x = self._as_plaintext(vector)
        return np.clip(x, -self.max_abs_value, self.max_abs_value)

    def encrypt(self, vector: npt.ArrayLike) -> EncryptedVector[PayloadT]:
        """Encrypt a 1-D vector with the public key. Values outside `max_abs_value` raise `PackingError`."""
        x = self._as_plaintext(vector)
        limit = self.max_abs_value
        if limit < math.inf:
            outside = np.flatnonzero(np.abs(x) > limit)
            if outside.size:
                index = int(outside[0])
                raise PackingError(
                    f"value {index} is {x[index]!r}, outside [-{limit}, {limit}] ({outside.size} values are); "
                    "clip it first (clip_vector)"
                )
        return EncryptedVector(self.kind, self.fingerprint, x.size, 1, self._encrypt(x))

    def add(self, a: EncryptedVector[PayloadT], b: EncryptedVector[PayloadT]) -> EncryptedVector[PayloadT]:
        """A new ciphertext of `a + b`; `a` and `b` are left as they are."""
        count = self._check_addable(a, b)
        return EncryptedVector(self.kind, self.fingerprint, a.length, count, self._add(a.payload, b.payload))

    def add_into(self, acc: EncryptedVector[PayloadT], b: EncryptedVector[PayloadT]) -> None:
        """`acc += b` in place: the edge's running sum, in memory constant in the number of clients.
        Nothing is changed when the check fails."""
        count = self._check_addable(acc, b)
        self._add_into(acc.payload, b.payload)
        acc.count = count

    def sum(self, ciphertexts: Iterable[EncryptedVector[PayloadT]]) -> EncryptedVector[PayloadT]:
        """Sum of one or more ciphertexts, as a new ciphertext."""
        iterator = iter(ciphertexts)
        first = next(iterator, None)
        if first is None:
            raise CryptoError("cannot sum an empty sequence of ciphertexts")
        self._check_own(first)
        acc = EncryptedVector(
            self.kind, self.fingerprint, first.length, first.count, self._copy(first.payload)
        )
        for ciphertext in iterator:
            self.add_into(acc, ciphertext)
        return acc

    def decrypt(self, ciphertext: EncryptedVector[PayloadT], *, workers: int | None = None) -> FloatArray:
        """The plaintext sum, as float64, range-checked (`in_range`). Needs the secret key (except for the
        plaintext scheme). `workers`: the processes a backend may spread a large decryption over (None:
        every core this process may use; see `decrypt_workers`)."""
        self._check_own(ciphertext)
        if not self.has_secret_key:
            raise MissingSecretKeyError(
                f"this {self.kind.value} scheme (key {envelope.short_hex(self.fingerprint)}) holds only the "
                "public key; decryption needs the secret key"
            )
        return self.in_range(self._decrypt(ciphertext, decrypt_workers(workers)), count=ciphertext.count)

    def in_range(self, values: npt.ArrayLike, *, count: int) -> FloatArray:
        """`values`, a decrypted sum of `count` encryptions, after checking that each lies where `count`
        encodings can sum to (`|v| <= count * max_abs_value + error_bound`) and short of the wrap point
        (`wrap_bound`), where a larger sum would have turned into a value of the other sign. Raises
        `DecryptionRangeError` otherwise, before anything is released: a sum that overflowed, a crafted
        ciphertext, or one made under another key (its decryption is noise spread over the whole range)."""
        x = np.asarray(values, dtype=np.float64)
        limit = count * self.max_abs_value
        bound = (
            limit + self.error_bound(count=count, max_abs=self.max_abs_value) if limit < math.inf else limit
        )
        what = f"{count} encryptions can sum to"
        if bound >= self.wrap_bound:
            bound, what = self.wrap_bound, "the scheme represents before it wraps"
        bad = np.flatnonzero(~(np.isfinite(x) & (np.abs(x) <= bound)))
        if bad.size:
            index = int(bad[0])
            raise DecryptionRangeError(
                f"decrypted value {index} is {float(x[index])!r}, outside the +/-{bound:.6g} that {what} "
                f"({bad.size} values are): the sum is not what it claims"
            )
        return x

    # -- the exact ring masks live in ----------------------------------------------------------------
    @property
    def ring_bits(self) -> int | None:
        """Bits of the exact ring `Z_(2^ring_bits)` that masked uploads live in (`protocol.secagg`), or None
        where the scheme has none (CKKS is approximate: masks would not cancel)."""
        return None

    def residues(self, vector: npt.ArrayLike) -> UIntArray:
        """`vector` encoded as ring residues, ready for masks: what `encrypt` would encrypt."""
        bits = self._ring("encode residues")
        x = self._as_plaintext(vector)
        if np.any(np.abs(x) > self.max_abs_value):
            raise PackingError(
                f"values must lie in [-{self.max_abs_value}, {self.max_abs_value}]; clip first"
            )
        out = self._residues(x)
        assert int(out.max(initial=0)) < 1 << bits
        return out

    def encrypt_residues(self, residues: npt.NDArray[np.uint64]) -> EncryptedVector[PayloadT]:
        """Encrypt ring residues (masked or not) as one summand."""
        bits = self._ring("encrypt residues")
        r = np.asarray(residues)
        if r.ndim != 1 or r.dtype != np.uint64 or not 1 <= r.size <= envelope.MAX_VECTOR_LENGTH:
            raise PackingError(
                f"residues must be a 1-D uint64 vector of 1 to {envelope.MAX_VECTOR_LENGTH} values, got "
                f"shape {r.shape} dtype {r.dtype}"
            )
        if int(r.max()) >> bits:
            raise PackingError(f"residue {int(np.argmax(r >> np.uint64(bits) > 0))} is outside [0, 2^{bits})")
        return EncryptedVector(self.kind, self.fingerprint, r.size, 1, self._encrypt_residues(r))

    def decrypt_residues(
        self, ciphertext: EncryptedVector[PayloadT], *, workers: int | None = None
    ) -> UIntArray:
        """The sum of the residues in `ciphertext`, reduced into the ring (masks not yet removed); `workers`
        as for `decrypt`."""
        self._ring("decrypt residues")
        self._check_own(ciphertext)
        if not self.has_secret_key:
            raise MissingSecretKeyError(f"this {self.kind.value} scheme holds only the public key")
        return self._decrypt_residues(ciphertext, decrypt_workers(workers))

    def decode_residues(self, residues: npt.NDArray[np.uint64], *, count: int) -> FloatArray:
        """The values of a sum of `count` encodings, from its unmasked residues. Raises `PackingError` where
        a value lies outside what `count` honest encodings can sum to (masks that did not cancel land
        there)."""
        self._ring("decode residues")
        return self._decode_residues(np.asarray(residues, dtype=np.uint64), count)

    def _ring(self, what: str) -> int:
        bits = self.ring_bits
        if bits is None:
            raise CryptoError(f"cannot {what}: this {self.kind.value} scheme has no exact ring for masks")
        return bits

    def _residues(self, x: FloatArray) -> UIntArray:
        raise CryptoError(f"{self.kind.value} has no exact ring")

    def _encrypt_residues(self, residues: UIntArray) -> PayloadT:
        raise CryptoError(f"{self.kind.value} has no exact ring")

    def _decrypt_residues(self, ciphertext: EncryptedVector[PayloadT], workers: int) -> UIntArray:
        raise CryptoError(f"{self.kind.value} has no exact ring")

    def _decode_residues(self, residues: UIntArray, count: int) -> FloatArray:
        raise CryptoError(f"{self.kind.value} has no exact ring")

    # -- wire format --------------------------------------------------------------------------------
    def serialize(self, ciphertext: EncryptedVector[PayloadT]) -> bytes:
        self._check_own(ciphertext)
        return envelope.encode(
            kind=self.kind,
            fingerprint=self.fingerprint,
            length=ciphertext.length,
            count=ciphertext.count,
            chunks=self._dump_chunks(ciphertext.payload),
        )

    def expectation(self, expected_length: int | None = None) -> envelope.Expectation:
        """What an envelope of this scheme must declare (kind, key fingerprint, slots, counts, chunk sizes)
        and, when given, hold (`expected_length` values)."""
        return envelope.Expectation(
            kind=self.kind,
            fingerprint=self.fingerprint,
            slots=self.slots,
            max_count=self.max_summands,
            chunk_bytes=self._chunk_bytes,
            expected_length=expected_length,
        )

    def max_ciphertext_bytes(self, length: int) -> int:
        """The most bytes a serialised ciphertext of `length` values under this scheme takes (what
        `deserialize` accepts at most): the bound of an upload's size."""
        return envelope.max_encoded_bytes(self.expectation(length), length)

    def deserialize(
        self, data: bytes | bytearray | memoryview, *, expected_length: int | None = None
    ) -> EncryptedVector[PayloadT]:
        """Parse a serialised ciphertext. Every header field and chunk size is checked against this scheme
        before the chunks reach the backend library; anything wrong raises `CiphertextError`."""
        parsed = envelope.decode(data, self.expectation(expected_length))
        try:
            payload = self._load_chunks(parsed.chunks, parsed.length)
        except CiphertextError:
            raise
        except (RuntimeError, ValueError, TypeError, OverflowError) as e:
            raise CiphertextError(
                f"ciphertext chunks are not valid {self.kind.value} ciphertexts: {e}"
            ) from e
        return EncryptedVector(self.kind, self.fingerprint, parsed.length, parsed.count, payload)

    # -- checks -------------------------------------------------------------------------------------
    def _as_plaintext(self, vector: npt.ArrayLike) -> FloatArray:
        x = np.asarray(vector)
        if x.ndim != 1:
            raise PackingError(f"can only encrypt a 1-D vector, got shape {x.shape}")
        if not 1 <= x.size <= envelope.MAX_VECTOR_LENGTH:
            raise PackingError(f"vector length must be 1 to {envelope.MAX_VECTOR_LENGTH}, got {x.size}")
        if x.dtype.kind not in "iuf":
            raise PackingError(f"can only encrypt real numbers, got dtype {x.dtype}")
        x = x.astype(np.float64, copy=False)
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            index = int(bad[0])
            raise PackingError(f"value {index} is {x[index]!r}: only finite values can be encrypted")
        return x

    def _check_own(self, ciphertext: EncryptedVector[PayloadT]) -> None:
        if not isinstance(ciphertext, EncryptedVector):
            raise CiphertextError(f"expected an EncryptedVector, got {type(ciphertext).__name__}")
        if ciphertext.kind != self.kind:
            raise CiphertextError(f"ciphertext is {ciphertext.kind.value}, this scheme is {self.kind.value}")
        if ciphertext.fingerprint != self.fingerprint:
            raise CiphertextError(
                f"ciphertext was made for key fingerprint {envelope.short_hex(ciphertext.fingerprint)}, "
                f"this scheme's is {envelope.short_hex(self.fingerprint)}"
            )

    def _check_addable(self, a: EncryptedVector[PayloadT], b: EncryptedVector[PayloadT]) -> int:
        self._check_own(a)
        self._check_own(b)
        if a.length != b.length:
            raise CiphertextError(f"cannot add ciphertexts of {a.length} and {b.length} values")
        count = a.count + b.count
        if count > self.max_summands:
            raise CiphertextError(
                f"adding would make a sum of {count} encryptions, this scheme allows at most "
                f"{self.max_summands} before values overflow"
            )
        return count

    # -- backend ------------------------------------------------------------------------------------
    @abstractmethod
    def _encrypt(self, x: FloatArray) -> PayloadT: ...

    @abstractmethod
    def _add(self, a: PayloadT, b: PayloadT) -> PayloadT: ...

    @abstractmethod
    def _add_into(self, acc: PayloadT, b: PayloadT) -> None: ...

    @abstractmethod
    def _copy(self, payload: PayloadT) -> PayloadT: ...

    @abstractmethod
    def _decrypt(self, ciphertext: EncryptedVector[PayloadT], workers: int) -> FloatArray:
        """The plaintext of `ciphertext`, over at most `workers` processes where the backend gains by it."""

    @abstractmethod
    def _dump_chunks(self, payload: PayloadT) -> Sequence[bytes]: ...

    @abstractmethod
    def _chunk_bytes(self, values: int) -> tuple[int, int]:
        """(min, max) serialised size of a chunk holding `values` values."""

    @abstractmethod
    def _load_chunks(self, chunks: list[memoryview], length: int) -> PayloadT:
        """Build a payload from chunks whose sizes the envelope already checked; raise `CiphertextError`
        (or let a library error through, which `deserialize` wraps) on anything invalid."""
