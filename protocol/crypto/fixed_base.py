"""Fixed-base exponentiation `h^a mod m` with a table precomputed for `h`.

The exponent is cut into 8-bit digits, `a = sum_i d_i 256^i`, and the table holds `h^(d 256^i)` for every
digit position `i` and digit `d`, so `h^a` is the product of one table entry per non-zero digit: a
`t`-bit exponent costs at most `ceil(t / 8) - 1` modular multiplications and no squaring (the fixed-base
windowing method with one table row per window: Brickell, Gordon, McCurley and Wilson, "Fast
exponentiation with precomputation", EUROCRYPT 1992; Menezes, van Oorschot and Vanstone, Handbook of
Applied Cryptography, section 14.6.3). Eight-bit digits read straight off `a.to_bytes`; a wider window
would halve few multiplications more at a table 2^w / w times larger.

Neither gmpy2 (`powmod`, `powmod_base_list`, `powmod_exp_list`: one sliding-window exponentiation per
call, nothing kept between calls), phe nor python-flint offers fixed-base exponentiation with a kept
table, so this module writes the window itself on gmpy2's multiplication.

`powers_from_os` runs in worker processes (`ObfuscatorPool.fill`): gmpy2 holds the GIL through a
multiplication, so threads would run these one at a time.
"""

from __future__ import annotations

import secrets
from typing import Any

import gmpy2

_DIGIT_BITS = 8
_DIGITS = 1 << _DIGIT_BITS


class FixedBase:
    """`base^a mod modulus` for any `0 <= a < 2^exponent_bits`, from a table built once (`ceil(bits / 8)`
    rows of 255 residues)."""

    def __init__(self, base: int, modulus: int, *, exponent_bits: int) -> None:
        if exponent_bits < 1:
            raise ValueError(f"exponent_bits must be >= 1, got {exponent_bits}")
        if modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {modulus}")
        m = gmpy2.mpz(modulus)
        self._modulus = m
        self._bits = exponent_bits
        self._width = -(-exponent_bits // _DIGIT_BITS)
        rows: list[list[Any]] = []
        power = gmpy2.mpz(base) % m  # base^(256^i)
        for _ in range(self._width):
            row = [gmpy2.mpz(1), power]
            for _ in range(2, _DIGITS):
                row.append(row[-1] * power % m)
            rows.append(row)
            power = row[-1] * power % m
        self._rows = rows

    @property
    def exponent_bits(self) -> int:
        return self._bits

    def power(self, exponent: int) -> Any:
        """`base^exponent mod modulus` as a gmpy2 `mpz`."""
        if not 0 <= exponent < 1 << self._bits:
            raise ValueError(
                f"exponent must lie in [0, 2^{self._bits}), got a {exponent.bit_length()}-bit value"
            )
        m = self._modulus
        acc = None
        for row, digit in zip(self._rows, exponent.to_bytes(self._width, "little"), strict=True):
            if digit:
                acc = row[digit] if acc is None else acc * row[digit] % m
        return gmpy2.mpz(1) if acc is None else acc

    def power_from_os(self) -> Any:
        """`base^a` for a fresh `a` drawn uniformly from `[0, 2^exponent_bits)` by the operating system's
        CSPRNG (`secrets`), never from a seedable generator."""
        return self.power(secrets.randbits(self._bits))


# One table per worker process, built by `init_worker` when the process starts.
_worker_table: FixedBase | None = None


def init_worker(base: int, modulus: int, exponent_bits: int) -> None:
    """Process-pool initializer: build this worker's table."""
    global _worker_table
    _worker_table = FixedBase(base, modulus, exponent_bits=exponent_bits)


def powers_from_os(count: int) -> list[bytes]:
    """`count` powers with fresh OS-drawn exponents from this worker's table, in gmpy2's binary form."""
    if _worker_table is None:
        raise RuntimeError("powers_from_os runs only in a process started with init_worker")
    return [gmpy2.to_binary(_worker_table.power_from_os()) for _ in range(count)]
