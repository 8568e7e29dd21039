"""Paillier decryption by the Chinese remainder theorem, many ciphertexts at a time over threads.

For `n = p q` and `c = (1 + n m) r^n mod n^2`: `m mod p = L_p(c^(p-1) mod p^2) h_p mod p` with
`L_p(x) = (x - 1) / p` and `h_p = L_p((1 + n)^(p-1) mod p^2)^-1 mod p`, the same modulo `q`, then CRT
(Paillier, EUROCRYPT 1999, section 7; phe's `raw_decrypt` computes exactly this, one ciphertext at a time).
The two exponentiations are nearly all the cost; `gmpy2.powmod_base_list` runs them for a whole batch with
the GIL released, so batches on a thread pool use every core in one process: the secret key never leaves
it, and nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gmpy2

#: Ciphertexts per task: large enough that a task's exponentiations dwarf its Python overhead, small
#: enough that the batches of one sum spread over the threads.
BATCH = 32


class _Half:
    """The modulo-`p` half of a decryption."""

    def __init__(self, p: Any, n: Any) -> None:
        self.p = p
        self.square = p * p
        self.exponent = p - 1
        self.h = gmpy2.invert((gmpy2.powmod(n + 1, self.exponent, self.square) - 1) // p, p)

    def residues(self, ciphertexts: Sequence[Any]) -> list[Any]:
        square, p, h = self.square, self.p, self.h
        powers = gmpy2.powmod_base_list([c % square for c in ciphertexts], self.exponent, square)
        return [(x - 1) // p * h % p for x in powers]


class CrtDecryptor:
    """Raw Paillier decryption (`c` to `m` in `[0, n)`) with the primes `p`, `q` of `n`."""

    def __init__(self, p: int, q: int) -> None:
        if p == q or p < 3 or q < 3:
            raise ValueError("p and q must be two distinct odd primes")
        small, large = sorted((gmpy2.mpz(p), gmpy2.mpz(q)))
        n = small * large
        self._p, self._q = _Half(small, n), _Half(large, n)
        self._p_inverse = gmpy2.invert(small, large)

    def decrypt(self, ciphertexts: Sequence[Any], *, workers: int = 1) -> list[Any]:
        """The plaintexts of `ciphertexts`, in order; `workers` threads share the batches."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        batches = [ciphertexts[i : i + BATCH] for i in range(0, len(ciphertexts), BATCH)]
        if workers == 1 or len(batches) < 2:
            return [m for batch in batches for m in self._batch(batch)]
        with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as executor:
            return [m for done in executor.map(self._batch, batches) for m in done]

    def _batch(self, ciphertexts: Sequence[Any]) -> list[Any]:
        p, q, p_inverse = self._p.p, self._q.p, self._p_inverse
        return [
            mp + (mq - mp) * p_inverse % q * p
            for mp, mq in zip(self._p.residues(ciphertexts), self._q.residues(ciphertexts), strict=True)
        ]
