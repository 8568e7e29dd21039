"""Paillier obfuscators `r^n mod n^2` by Damgard-Jurik-Nielsen's short-exponent method.

A Paillier ciphertext is `(1 + n m) r^n mod n^2` for some `r` in `Z*_n`; the obfuscator `r^n` costs a
full exponentiation with a `k`-bit exponent when `r` is drawn afresh (`k`: the bits of `n`). Following
Damgard, Jurik and Nielsen ("A generalization of Paillier's public-key system with applications to
electronic voting", Int. J. Inf. Secur. 9, 2010: the variant with faster encryption), each pool draws once
`x` uniform in `Z*_n` and keeps the base `h = (-x^2)^n mod n^2`, then makes every obfuscator as `h^a` with
`a` drawn afresh from the operating system (`secrets`) with `ceil(k / 2)` bits (1,024 at 2048-bit keys).
`h^a = ((-x^2)^a)^n` is the `n`-th power of an element of `Z*_n`, so a ciphertext is exactly what it was:
decryption, keys and the wire format are unchanged. `h^a` comes from a fixed-base table for `h`
(`protocol.crypto.fixed_base`): at most `ceil(k / 16) - 1` multiplications modulo `n^2` (127 at 2048 bits),
where a fresh `r^n` takes about `k` squarings and a few hundred multiplications.

Security. Were `a` uniform modulo the order of `h`, `h^a` would be a uniform `n`-th power in the group `h`
generates, and semantic security would rest on the decisional composite residuosity assumption as for
Paillier itself (DJN, ibid.). With `a` of `ceil(k / 2)` bits it rests, in addition, on DJN's assumption that
`h^a` for such a short `a` cannot be told from `h^a` for a full-length one; the best known ways to exploit a
short exponent (Pollard's lambda and baby-step giant-step on `a`; van Oorschot and Wiener, EUROCRYPT 1996)
cost about `2^(k/4)` operations, `2^512` at `k = 2048`, far above the 112-bit strength of the modulus. `h` is
the hospital's own (each pool draws its own; nothing about it is public, though publishing it would not
hurt: DJN put it in the public key). Each obfuscator is handed out once: reusing one would let anyone
divide two ciphertexts and learn the difference of their plaintexts. Two draws repeat with probability
about `draws^2 / 2^(k/2 + 1)`.

`fill` spreads the work over worker processes (gmpy2 holds the GIL through a multiplication, so threads
would take turns); each builds its own table for `h` once, when the pool first needs it, and draws its own
exponents from the OS. The workers stay for the pool's life (`close`, or when the pool is collected).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import threading
import weakref
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import gmpy2

from protocol.crypto.errors import CryptoError, KeyMaterialError
from protocol.crypto.fixed_base import FixedBase, init_worker, powers_from_os

#: Below this many obfuscators a fill stays in the calling process: starting workers (a fresh interpreter
#: and a table each) costs more than the work.
PARALLEL_MIN = 1024
_BATCHES_PER_WORKER = 4  # smaller tasks than one per worker, so that a slow core does not hold the fill


def default_workers() -> int:
    """The cores this process may run on (all of the machine's where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ObfuscatorPool:
    """Obfuscators `h^a mod n^2` for one modulus `n`, each handed out once.

    `fill` and `take` may run in different threads (deque appends and pops are atomic; the table is built
    under a lock, once).
    """

    def __init__(self, n: int) -> None:
        if n < 3 or n % 2 == 0:
            raise KeyMaterialError(f"n must be an odd modulus above 2, got a {int(n).bit_length()}-bit value")
        self._n = gmpy2.mpz(n)
        self._n_square = self._n * self._n
        self._exponent_bits = (self._n.bit_length() + 1) // 2
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._base: Any = None  # h, drawn on first use (edges and the cloud never encrypt)
        self._table: FixedBase | None = None
        self._executor: ProcessPoolExecutor | None = None
        self._executor_workers = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def n(self) -> int:
        return int(self._n)

    @property
    def exponent_bits(self) -> int:
        """Bits of each exponent `a`: `ceil(k / 2)` for a `k`-bit `n` (DJN)."""
        return self._exponent_bits

    def __len__(self) -> int:
        return len(self._items)

    def _fixed_base(self) -> FixedBase:
        with self._lock:
            if self._table is None:
                self._base = self._draw_base()
                self._table = FixedBase(self._base, int(self._n_square), exponent_bits=self._exponent_bits)
            return self._table

    def _draw_base(self) -> Any:
        n = self._n
        while True:
            x = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
            if gmpy2.gcd(x, n) == 1:  # fails with probability ~2^-1023; a hit would factor n
                return gmpy2.powmod((-x * x) % n, n, self._n_square)

    def fill(self, count: int, *, workers: int | None = None) -> None:
        """Compute `count` more obfuscators, over `workers` processes (default: every core this process may
        use when `count >= PARALLEL_MIN`, else this process alone)."""
        if count < 0:
            raise CryptoError(f"count must be >= 0, got {count}")
        if workers is not None and workers < 1:
            raise CryptoError(f"workers must be >= 1, got {workers}")
        if workers is None:
            workers = default_workers() if count >= PARALLEL_MIN else 1
        table = self._fixed_base()
        if workers == 1 or count < 2:
            for _ in range(count):
                self._items.append(table.power_from_os())
            return
        tasks = min(count, workers * _BATCHES_PER_WORKER)
        sizes = [count // tasks + (1 if i < count % tasks else 0) for i in range(tasks)]
        try:
            for batch in self._workers(workers).map(powers_from_os, sizes):
                self._items.extend(gmpy2.from_binary(b) for b in batch)
        except BrokenProcessPool as e:
            self.close()  # the next fill starts new workers
            raise CryptoError(f"an obfuscator worker process stopped: {e}") from e
        except OSError as e:  # no process could be started (limits, a sandbox)
            self.close()
            raise CryptoError(f"obfuscator worker processes could not start: {e}") from e

    def _workers(self, workers: int) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is not None and self._executor_workers == workers:
                return self._executor
        self.close()
        executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a process that runs threads
            initializer=init_worker,
            initargs=(int(self._base), int(self._n_square), self._exponent_bits),
        )
        with self._lock:
            self._executor, self._executor_workers = executor, workers
            self._finalizer = weakref.finalize(self, executor.shutdown, wait=False, cancel_futures=True)
        return executor

    def close(self) -> None:
        """Stop the worker processes, if any (the obfuscators already made stay)."""
        with self._lock:
            finalizer, self._finalizer, self._executor = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def fresh(self) -> Any:
        """One new obfuscator, computed now."""
        return self._fixed_base().power_from_os()

    def take(self, count: int) -> list[Any]:
        """`count` obfuscators, from the pool while it lasts, computed inline after that."""
        out = []
        for _ in range(count):
            try:
                out.append(self._items.popleft())
            except IndexError:
                out.append(self.fresh())
        return out
