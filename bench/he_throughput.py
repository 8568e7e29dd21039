"""Throughput of fedlora's HE backends against a plaintext float32 sum, all measured in one run.

For each vector size and client count: encrypt, homomorphic add, decrypt and deserialise throughput in
parameters per second, bytes per parameter on the wire, and each figure's slowdown against plaintext.
Rows: CKKS (TenSEAL), packed Paillier with obfuscators computed inline and precomputed, naive
one-value-per-ciphertext Paillier (phe), and plain numpy float32.

    .venv/bin/python bench/he_throughput.py                       # 150k and 1M parameters, 10 and 50 clients
    .venv/bin/python bench/he_throughput.py --sizes 36864 --clients 3
    .venv/bin/python bench/he_throughput.py --quick               # seconds: a smoke test

How it stays under five minutes on one core (each shortcut is named in the footnotes it prints):
- the N clients' ciphertexts are one encryption added N times: add costs the same for any ciphertext;
- packed Paillier encrypts, precomputes and decrypts a sample of chunks and extrapolates linearly (every
  chunk costs the same); its add runs on the full length, the sampled chunks tiled to fill it;
- naive Paillier encrypts, adds and decrypts a sample of values and extrapolates.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bench_timing import seconds
from phe import paillier as phe_paillier
from rich.console import Console
from rich.table import Table

from protocol.crypto import (
    CKKSParams,
    EncryptedVector,
    HEScheme,
    PaillierParams,
    PaillierScheme,
    generate_scheme,
    scheme_from_public,
)

TITLE = "fedlora HE throughput"
SEED = 7


@dataclass
class Row:
    scheme: str
    params: int
    clients: int
    encrypt: float  # parameters per second
    add: float
    decrypt: float
    deserialize: float | None
    bytes_per_param: float
    notes: list[str] = field(default_factory=list)


def plaintext_rows(x: np.ndarray, clients: list[int]) -> list[Row]:
    x32 = x.astype(np.float32)
    wire = x32.tobytes()
    encode = x32.size / seconds(lambda: x32.tobytes(), repeat=5)
    decode = x32.size / seconds(lambda: np.frombuffer(wire, dtype=np.float32).astype(np.float64), repeat=5)
    rows = []
    for n in clients:
        acc = x32.copy()

        def add_all(acc: np.ndarray = acc, n: int = n) -> None:
            for _ in range(n - 1):
                np.add(acc, x32, out=acc)

        add = x32.size * (n - 1) / seconds(add_all, repeat=3) if n > 1 else float("inf")
        rows.append(Row("plain float32", x.size, n, encode, add, decode, decode, 4.0, ["encrypt = tobytes"]))
    return rows


def summed(scheme: HEScheme[Any], ct: EncryptedVector[Any], n: int) -> tuple[EncryptedVector[Any], float]:
    """`n` copies of `ct` summed with `add_into`; returns the sum and the seconds per add."""
    acc = scheme.sum([ct])
    start = time.perf_counter()
    for _ in range(n - 1):
        scheme.add_into(acc, ct)
    return acc, (time.perf_counter() - start) / max(n - 1, 1)


def ckks_rows(x: np.ndarray, clients: list[int]) -> list[Row]:
    params = CKKSParams()
    cloud = generate_scheme(params)
    client = scheme_from_public(params, cloud.public_bytes())
    ct: EncryptedVector[Any] | None = None

    def encrypt() -> None:
        nonlocal ct
        ct = client.encrypt(x)

    encrypt_rate = x.size / seconds(encrypt, repeat=2)
    assert ct is not None
    wire = client.serialize(ct)
    deserialize = x.size / seconds(lambda: client.deserialize(wire, expected_length=x.size), repeat=2)
    rows = []
    for n in clients:
        acc, per_add = summed(client, ct, n)
        decrypt = x.size / seconds(lambda acc=acc: cloud.decrypt(acc), repeat=2)
        rows.append(
            Row(
                "CKKS",
                x.size,
                n,
                encrypt_rate,
                x.size / per_add,
                decrypt,
                deserialize,
                len(wire) / x.size,
                ["a"],
            )
        )
    return rows


def paillier_rows(
    cloud: PaillierScheme, x: np.ndarray, clients: list[int], sample_chunks: int
) -> tuple[list[Row], float]:
    """Rows for packed Paillier without and with precomputed obfuscators, and the precompute seconds
    per client upload (extrapolated)."""
    params = cloud.params
    client = scheme_from_public(params, cloud.public_bytes())
    assert isinstance(client, PaillierScheme)
    n_chunks = -(-x.size // params.slots)
    sample = min(n_chunks, sample_chunks)
    xs = x[: sample * params.slots]
    sampled = f"b ({sample} of {n_chunks} chunks)" if sample < n_chunks else "b (all chunks)"

    inline = xs.size / seconds(lambda: client.encrypt(xs), repeat=2)
    # Two fills, one per timed pooled encryption below; each obfuscator is used once.
    precompute = seconds(lambda: client.precompute(xs.size), repeat=2) * n_chunks / sample
    ct_sample: EncryptedVector[Any] | None = None

    def encrypt_pooled() -> None:
        nonlocal ct_sample
        ct_sample = client.encrypt(xs)

    pooled = xs.size / seconds(encrypt_pooled, repeat=2)
    assert ct_sample is not None and len(client.pool) == 0
    # Full-length ciphertext from the sampled chunks, tiled: add and wire costs are per chunk.
    full = EncryptedVector(
        client.kind, client.fingerprint, x.size, 1, [ct_sample.payload[i % sample] for i in range(n_chunks)]
    )
    wire = client.serialize(full)
    deserialize = x.size / seconds(lambda: client.deserialize(wire, expected_length=x.size))
    rows = []
    for n in clients:
        if n > client.max_summands:
            continue
        _, per_add = summed(client, full, n)
        acc_sample, _ = summed(client, ct_sample, n)
        decrypt = xs.size / seconds(lambda acc=acc_sample: cloud.decrypt(acc), repeat=2)
        common = (x.size, n)
        bpp = len(wire) / x.size
        rows.append(
            Row("Paillier packed", *common, inline, x.size / per_add, decrypt, deserialize, bpp, [sampled])
        )
        rows.append(
            Row(
                "Paillier packed+pre",
                *common,
                pooled,
                x.size / per_add,
                decrypt,
                deserialize,
                bpp,
                [sampled, "c"],
            )
        )
    return rows, precompute


@dataclass
class Naive:
    encrypt: float
    add: float
    decrypt: float
    bytes_per_param: float
    sample: int


def measure_naive(cloud: PaillierScheme, sample: int) -> Naive:
    """Plain (unpacked) Paillier as phe does it, one ciphertext per value, under a key of the same size."""
    public, secret = phe_paillier.generate_paillier_keypair(n_length=cloud.params.key_bits)
    values = np.random.default_rng(SEED).uniform(-1, 1, sample)
    numbers: list[Any] = []

    def encrypt() -> None:
        numbers.extend(public.encrypt(float(v)) for v in values)

    encrypt_rate = sample / seconds(encrypt)
    add_rate = sample / seconds(lambda: [a + a for a in numbers])
    decrypt_rate = sample / seconds(lambda: [float(secret.decrypt(number)) for number in numbers])
    width = (2 * cloud.params.key_bits) // 8  # one n^2-sized integer per value
    return Naive(encrypt_rate, add_rate, decrypt_rate, float(width), sample)


def fmt_rate(rate: float) -> str:
    if rate == float("inf"):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g}{unit}"
    return f"{rate:.3g}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3g}x" if ratio < 1e4 else f"{ratio:.2e}x"


def cell(rate: float | None, plain: float | None) -> str:
    if rate is None:
        return "-"
    if plain is None or rate == float("inf") or plain == float("inf"):
        return fmt_rate(rate)
    return f"{fmt_rate(rate)} ({fmt_ratio(plain / rate)})"


def render(console: Console, rows: list[Row]) -> None:
    table = Table(title=f"{TITLE} (params/s; in brackets: slowdown vs plain float32)")
    for name in (
        "scheme",
        "params",
        "clients",
        "encrypt",
        "add",
        "decrypt",
        "deserialize",
        "B/param",
        "notes",
    ):
        table.add_column(name, justify="left" if name in {"scheme", "notes"} else "right")
    plain = {(r.params, r.clients): r for r in rows if r.scheme == "plain float32"}
    for r in rows:
        base = plain.get((r.params, r.clients))
        table.add_row(
            r.scheme,
            f"{r.params:,}",
            str(r.clients),
            cell(r.encrypt, base.encrypt if base and r is not base else None),
            cell(r.add, base.add if base and r is not base else None),
            cell(r.decrypt, base.decrypt if base and r is not base else None),
            cell(r.deserialize, base.deserialize if base and r is not base else None),
            f"{r.bytes_per_param:.2f}" + (f" ({r.bytes_per_param / 4:.3g}x)" if r is not base else ""),
            ", ".join(r.notes),
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[150_000, 1_000_000], help="parameters")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50], help="uploads summed per round")
    parser.add_argument("--paillier-chunks", type=int, default=128, help="chunks sampled for Paillier")
    parser.add_argument("--naive-sample", type=int, default=200, help="values sampled for naive Paillier")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and samples, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.clients, args.paillier_chunks, args.naive_sample = [5000], [3], 4, 10
    if min(args.sizes) < 1 or min(args.clients) < 1:
        parser.error("--sizes and --clients must be positive")

    console = Console(width=200)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    paillier = generate_scheme(PaillierParams())
    assert isinstance(paillier, PaillierScheme)
    naive = measure_naive(paillier, args.naive_sample)

    rows: list[Row] = []
    precompute: dict[int, float] = {}
    for size in args.sizes:
        x = rng.uniform(-1.0, 1.0, size)
        rows += plaintext_rows(x, args.clients)
        rows += ckks_rows(x, args.clients)
        packed, precompute[size] = paillier_rows(paillier, x, args.clients, args.paillier_chunks)
        rows += packed
        for n in args.clients:
            rows.append(
                Row(
                    "Paillier naive",
                    size,
                    n,
                    naive.encrypt,
                    naive.add,
                    naive.decrypt,
                    None,
                    naive.bytes_per_param,
                    [f"d ({naive.sample}-value sample)"],
                )
            )
    rows.sort(key=lambda r: (r.params, r.clients))
    render(console, rows)
    console.print(
        "notes: a = add: one encryption added N times (add costs the same for any ciphertext);\n"
        f"       b = packed Paillier encrypt, precompute and decrypt measured on the sampled chunks and "
        "extrapolated linearly; add on the full length (sampled chunks tiled);\n"
        "       c = encrypt with obfuscators precomputed while the client trains (precompute time below, "
        "not in the encrypt column);\n"
        f"       d = naive phe Paillier, one ciphertext per value: {naive.sample} values measured, "
        "extrapolated; same rate for every size."
    )
    summarise(console, rows, precompute)
    console.print(f"total bench time {time.perf_counter() - started:.1f} s, one process, one thread")
    return 0


def summarise(console: Console, rows: list[Row], precompute: dict[int, float]) -> None:
    table = Table(title="packed vs naive Paillier, and targets")
    for name in (
        "params",
        "packed/naive enc",
        "packed+pre/naive enc",
        "precompute s/client",
        "packed B/param",
        "CKKS enc p/s",
    ):
        table.add_column(name, justify="right")
    checks: dict[str, bool] = {}
    for size in sorted(precompute):
        pick = {r.scheme: r for r in rows if r.params == size}
        packed, pre, naive, ckks = (
            pick.get(name) for name in ("Paillier packed", "Paillier packed+pre", "Paillier naive", "CKKS")
        )
        if not (packed and pre and naive and ckks):
            continue
        ratio, ratio_pre = packed.encrypt / naive.encrypt, pre.encrypt / naive.encrypt
        table.add_row(
            f"{size:,}",
            fmt_ratio(ratio),
            fmt_ratio(ratio_pre),
            f"{precompute[size]:.1f}",
            f"{packed.bytes_per_param:.2f}",
            fmt_rate(ckks.encrypt),
        )
        checks[f"packed >= 50x naive encrypt ({size:,})"] = ratio >= 50
        checks[f"packed+pre >= 300x naive encrypt ({size:,})"] = ratio_pre >= 300
        checks[f"packed <= 8 B/param ({size:,})"] = packed.bytes_per_param <= 8
        checks[f"CKKS encrypt >= 500k params/s ({size:,})"] = ckks.encrypt >= 500e3
    console.print(table)
    for name, met in checks.items():
        console.print(f"target {name}: {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    raise SystemExit(main())
