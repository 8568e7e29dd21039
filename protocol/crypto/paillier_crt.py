"""Paillier decryption by the Chinese remainder theorem, many ciphertexts at a time over worker processes.

For `n = p q` and `c = (1 + n m) r^n mod n^2`: `m mod p = L_p(c^(p-1) mod p^2) h_p mod p` with
`L_p(x) = (x - 1) / p` and `h_p = L_p((1 + n)^(p-1) mod p^2)^-1 mod p`, the same modulo `q`, then CRT
(Paillier, EUROCRYPT 1999, section 7; phe's `raw_decrypt` computes exactly this, one ciphertext at a time).
The two exponentiations are nearly all the cost, and gmpy2 holds the GIL through them (threads take turns:
`bench/cloud_decrypt.py` measures it), so a large sum is cut into slices that worker processes decrypt,
each returning its slice's plaintexts in gmpy2's binary form. The workers are started for one call and
stopped after it (spawned, never forked from a process that runs threads): `p` and `q` reach them with each
slice over the pool's pipes and live no longer than the call. A worker that fails or dies raises
`DecryptionWorkerError`, which decrypted nothing and leaves the caller free to call again; when no worker
could start at all (a process limit), it is a `WorkersUnavailableError`, and the caller, which holds the key,
can decrypt in its own process (`workers=1`).
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import gmpy2

from protocol.crypto.errors import DecryptionWorkerError, WorkersUnavailableError

#: Ciphertexts per `powmod_base_list` call: large enough that its exponentiations dwarf the Python overhead
#: around it.
BATCH = 32
#: Below this many ciphertexts (about 190,000 values at 2048 bits) a decryption stays in the calling
#: process: starting workers (a fresh interpreter each, importing this package) costs a good share of the
#: work saved.
PARALLEL_MIN = 2048
_SLICES_PER_WORKER = 4  # more slices than workers, so that a slow core does not hold the others up


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
        self._primes = (int(small), int(large))
        self._p, self._q = _Half(small, n), _Half(large, n)
        self._p_inverse = gmpy2.invert(small, large)

    def decrypt(
        self, ciphertexts: Sequence[Any], *, workers: int = 1, parallel_min: int | None = None
    ) -> list[Any]:
        """The plaintexts of `ciphertexts`, in order, over `workers` processes once there are `parallel_min`
        of them (None: `PARALLEL_MIN`), else in this process. Raises `DecryptionWorkerError` if a worker
        fails, `WorkersUnavailableError` (one) if none could start."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers == 1 or len(ciphertexts) < (PARALLEL_MIN if parallel_min is None else parallel_min):
            return self.decrypt_here(ciphertexts)
        tasks = min(len(ciphertexts), workers * _SLICES_PER_WORKER)
        bounds = [len(ciphertexts) * i // tasks for i in range(tasks + 1)]
        slices = [
            [gmpy2.to_binary(gmpy2.mpz(c)) for c in ciphertexts[start:end]]
            for start, end in itertools.pairwise(bounds)
        ]
        out: list[Any] = []
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        started = context.Event()  # set by the first worker that starts
        try:
            with ProcessPoolExecutor(
                max_workers=min(workers, tasks),
                mp_context=context,
                initializer=_started,
                initargs=(started,),
            ) as executor:
                try:
                    futures = [executor.submit(decrypt_slice, self._primes, part) for part in slices]
                except OSError as e:  # no process could be started (a process limit, a sandbox)
                    raise WorkersUnavailableError(f"decryption worker processes could not start: {e}") from e
                for future in futures:
                    out.extend(gmpy2.from_binary(m) for m in future.result())
        except DecryptionWorkerError:
            raise
        except BrokenProcessPool as e:
            if not started.is_set():
                raise WorkersUnavailableError(f"no decryption worker process started: {e}") from e
            raise DecryptionWorkerError(f"a decryption worker process stopped: {e}") from e
        except Exception as e:  # raised inside a worker: re-raised here by the pool
            raise DecryptionWorkerError(f"a decryption worker failed: {type(e).__name__}: {e}") from e
        return out

    def decrypt_here(self, ciphertexts: Sequence[Any]) -> list[Any]:
        """The plaintexts of `ciphertexts`, in order, in the calling thread."""
        return [m for i in range(0, len(ciphertexts), BATCH) for m in self._batch(ciphertexts[i : i + BATCH])]

    def _batch(self, ciphertexts: Sequence[Any]) -> list[Any]:
        p, q, p_inverse = self._p.p, self._q.p, self._p_inverse
        return [
            mp + (mq - mp) * p_inverse % q * p
            for mp, mq in zip(self._p.residues(ciphertexts), self._q.residues(ciphertexts), strict=True)
        ]


def _started(started: Any) -> None:
    """A worker's initializer: says that a worker process started (a `multiprocessing` event)."""
    started.set()


def decrypt_slice(primes: tuple[int, int], ciphertexts: Sequence[bytes]) -> list[bytes]:
    """A worker's task: the plaintexts of `ciphertexts` (gmpy2's binary form, both ways) under `primes`."""
    decryptor = CrtDecryptor(*primes)
    plaintexts = decryptor.decrypt_here([gmpy2.from_binary(c) for c in ciphertexts])
    return [gmpy2.to_binary(m) for m in plaintexts]
