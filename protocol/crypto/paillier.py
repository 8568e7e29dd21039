"""Packed Paillier: phe for key generation, gmpy2 for the arithmetic.

Encryption with `g = n + 1` (Paillier, EUROCRYPT 1999; phe's choice): `c = (1 + n m) r^n mod n^2`, since
`(n + 1)^m = 1 + n m mod n^2`. Adding plaintexts multiplies ciphertexts. Each plaintext `m` packs
`params.slots` fixed-point values (`protocol.crypto.packing`), which is what makes it affordable: one
2048-bit key carries 93 values at 16 bits with 6 bits of headroom for 64 clients, 5.5 bytes per value.

Almost all of the encryption cost is the obfuscator `r^n mod n^2`. It does not depend on the data, so
`precompute` (or an `ObfuscatorPool` filled in a background thread) computes them while the client trains,
by Damgard-Jurik-Nielsen's short exponents on a fixed base over every core (`protocol.crypto.obfuscators`,
which states the exponent length and why it is safe), and `encrypt` only packs and multiplies. Each
obfuscator is popped from the pool and used once. Decryption runs by CRT over worker
processes (`protocol.crypto.paillier_crt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
from phe import paillier as phe_paillier

from protocol.crypto import packing
from protocol.crypto.base import EncryptedVector, FloatArray, HEScheme, UIntArray
from protocol.crypto.envelope import chunk_lengths
from protocol.crypto.errors import CiphertextError, KeyMaterialError, MissingSecretKeyError, PackingError
from protocol.crypto.obfuscators import ObfuscatorPool
from protocol.crypto.paillier_crt import CrtDecryptor
from protocol.crypto.params import HEKind, PaillierParams

PaillierPayload = list[Any]  # one gmpy2.mpz ciphertext per chunk


class PaillierScheme(HEScheme[PaillierPayload]):
    """Packed Paillier scheme; build it with `generate`, `from_public` or `from_secret`."""

    kind = HEKind.PAILLIER

    def __init__(self, params: PaillierParams, n: int, primes: tuple[int, int] | None = None) -> None:
        problem = params.ring_problem()
        if problem is not None:
            raise PackingError(problem)
        self._params = params
        self._n = gmpy2.mpz(n)
        self._n_square = self._n * self._n
        self._width = (self._n_square.bit_length() + 7) // 8
        self._public_key = phe_paillier.PaillierPublicKey(int(n))
        self._private_key = (
            None if primes is None else phe_paillier.PaillierPrivateKey(self._public_key, *primes)
        )
        self._decryptor = None if primes is None else CrtDecryptor(*primes)
        self._pool = ObfuscatorPool(int(n))

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def generate(cls, params: PaillierParams) -> PaillierScheme:
        public, private = phe_paillier.generate_paillier_keypair(n_length=params.key_bits)
        return cls(params, public.n, (private.p, private.q))

    @classmethod
    def from_public(cls, params: PaillierParams, public_bytes: bytes) -> PaillierScheme:
        return cls(params, _read_modulus(params, public_bytes, "public key"))

    @classmethod
    def from_secret(cls, params: PaillierParams, secret_bytes: bytes) -> PaillierScheme:
        size = params.key_bits // 8
        if len(secret_bytes) != 3 * size:
            raise KeyMaterialError(
                f"Paillier secret key must be {3 * size} bytes (n, p, q), got {len(secret_bytes)}"
            )
        n = _read_modulus(params, secret_bytes[:size], "secret key's n")
        p = int.from_bytes(secret_bytes[size : 2 * size], "big")
        q = int.from_bytes(secret_bytes[2 * size :], "big")
        if p * q != n or p == q or not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
            raise KeyMaterialError(
                "Paillier secret key: p and q are not two distinct primes whose product is n"
            )
        return cls(params, n, (p, q))

    # -- key material -------------------------------------------------------------------------------
    @property
    def params(self) -> PaillierParams:
        return self._params

    def public_bytes(self) -> bytes:
        return int(self._n).to_bytes(self._params.key_bits // 8, "big")

    def secret_bytes(self) -> bytes:
        if self._private_key is None:
            raise MissingSecretKeyError("this Paillier scheme holds only the public key n")
        size = self._params.key_bits // 8
        p, q = self._private_key.p, self._private_key.q
        return self.public_bytes() + p.to_bytes(size, "big") + q.to_bytes(size, "big")

    @property
    def has_secret_key(self) -> bool:
        return self._private_key is not None

    # -- capacity -----------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self._params.slots

    @property
    def max_summands(self) -> int:
        return self._params.max_summands

    @property
    def max_abs_value(self) -> float:
        return self._params.max_abs_value

    def error_bound(self, *, count: int, max_abs: float) -> float:
        # Rounding to the nearest step loses at most step / 2 per summand; the rest is float64 rounding,
        # which grows with the values when they lie beyond the clip.
        beyond = max(0.0, max_abs - self._params.clip)
        return count * (self._params.encoding_error + 8 * np.finfo(np.float64).eps * beyond)

    @property
    def pool(self) -> ObfuscatorPool:
        """The obfuscators `encrypt` draws from; `fill` it (or call `precompute`) ahead of time."""
        return self._pool

    def precompute(self, length: int) -> None:
        """Fill the pool with the obfuscators one vector of `length` values needs, over every core once
        there are enough of them to be worth starting workers (`ObfuscatorPool.fill`)."""
        self._pool.fill(len(chunk_lengths(length, self.slots)))

    @property
    def ring_bits(self) -> int | None:
        return self._params.ring_bits if self._params.masking else None

    # -- backend ------------------------------------------------------------------------------------
    def _encrypt(self, x: FloatArray) -> PaillierPayload:
        return self._encrypt_packed(packing.pack_slots(self._residues(x), self._params))

    def _residues(self, x: FloatArray) -> UIntArray:
        return packing.residues(packing.quantise(x, self._params), self._params)

    def _encrypt_residues(self, residues: UIntArray) -> PaillierPayload:
        return self._encrypt_packed(packing.pack_slots(residues, self._params))

    def _encrypt_packed(self, plaintexts: list[int]) -> PaillierPayload:
        obfuscators = self._pool.take(len(plaintexts))
        n = self._n
        # (1 + n m) r = r + n (m r mod n) mod n^2, and r + n (m r mod n) < n^2 + n^2: one subtraction at
        # most, and products of half the size of (1 + n m) r.
        n_square = self._n_square
        out = []
        for m, r in zip(plaintexts, obfuscators, strict=True):
            c = r + n * (m * r % n)
            out.append(c - n_square if c >= n_square else c)
        return out

    def _decrypt_residues(self, ciphertext: EncryptedVector[PaillierPayload], workers: int) -> UIntArray:
        return packing.ring_reduce(self._decrypt_slots(ciphertext, workers), self._params)

    def _decode_residues(self, residues: UIntArray, count: int) -> FloatArray:
        sums = packing.shifted_sums(residues, count=count, params=self._params)
        return packing.dequantise(sums, self._params)

    def _decrypt_slots(self, ciphertext: EncryptedVector[PaillierPayload], workers: int) -> UIntArray:
        if self._decryptor is None:  # HEScheme.decrypt checks this first; kept for direct callers
            raise MissingSecretKeyError("this Paillier scheme holds only the public key n")
        plaintexts = self._decryptor.decrypt(ciphertext.payload, workers=workers)
        return packing.unpack_slots(plaintexts, ciphertext.length, self._params)

    def _add(self, a: PaillierPayload, b: PaillierPayload) -> PaillierPayload:
        n_square = self._n_square
        return [x * y % n_square for x, y in zip(a, b, strict=True)]

    def _add_into(self, acc: PaillierPayload, b: PaillierPayload) -> None:
        n_square = self._n_square
        for index, y in enumerate(b):
            acc[index] = acc[index] * y % n_square

    def _copy(self, payload: PaillierPayload) -> PaillierPayload:
        return list(payload)  # mpz values are never mutated in place

    def _decrypt(self, ciphertext: EncryptedVector[PaillierPayload], workers: int) -> FloatArray:
        slots = self._decrypt_slots(ciphertext, workers)
        if self._params.masking:  # unmasked residues of a masking federation: reduce into the ring first
            slots = packing.ring_reduce(slots, self._params)
        return self._decode_residues(slots, ciphertext.count)

    def _dump_chunks(self, payload: PaillierPayload) -> Sequence[bytes]:
        width = self._width
        return [c.to_bytes(width, "big") for c in payload]  # mpz writes its bytes without an int copy

    def _chunk_bytes(self, values: int) -> tuple[int, int]:
        return self._width, self._width

    def _load_chunks(self, chunks: list[memoryview], length: int) -> PaillierPayload:
        n, n_square = self._n, self._n_square
        payload = []
        # Every chunk is invertible modulo n^2 iff each is prime to n = pq, iff the product of them all modulo n
        # is: it is 0 modulo p exactly when one of them is. One gcd, not one per chunk; the chunk at fault is
        # looked for only when the product fails.
        product = gmpy2.mpz(1)
        for index, chunk in enumerate(chunks):
            c = gmpy2.mpz(int.from_bytes(chunk, "big"))
            if not 0 < c < n_square:
                raise CiphertextError(f"Paillier chunk {index} is not in [1, n^2) for this key")
            product = product * c % n
            payload.append(c)
        if gmpy2.gcd(product, n) != 1:
            index = next(i for i, c in enumerate(payload) if gmpy2.gcd(c, n) != 1)
            raise CiphertextError(f"Paillier chunk {index} is not invertible modulo n^2")
        return payload


def _read_modulus(params: PaillierParams, data: bytes, what: str) -> int:
    size = params.key_bits // 8
    if len(data) != size:
        raise KeyMaterialError(
            f"Paillier {what} must be {size} bytes for {params.key_bits}-bit keys, got {len(data)}"
        )
    n = int.from_bytes(data, "big")
    if n.bit_length() != params.key_bits or n % 2 == 0 or gmpy2.is_prime(n):
        raise KeyMaterialError(f"Paillier {what} is not an odd {params.key_bits}-bit composite modulus")
    # The packed plaintext must stay below n (params.slots is derived from key_bits for that).
    if params.slots * params.slot_bits >= n.bit_length():
        raise KeyMaterialError(f"{params.slots} slots of {params.slot_bits} bits do not fit under n")
    return n
