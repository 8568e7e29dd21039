"""Packed Paillier's hospital and cloud paths, old against new, all measured in one run on this machine.

Prints, for a 2048-bit key at the default parameters:
- obfuscators: a fresh `r^n mod n^2` per chunk (the old path) against DJN short exponents on a fixed base
  (`protocol.crypto.obfuscators`), in values/s on one core and on every core;
- the online part of encryption (pack, one multiplication per chunk, serialise) with obfuscators ready;
- the offline cost of one round's obfuscators at `--round-values` values, on one core and on every core;
- decryption: phe's `raw_decrypt` one ciphertext at a time (the old path), CRT batches on one thread, and
  over one worker process per core (`protocol.crypto.paillier_crt`; threads against processes:
  `bench/cloud_decrypt.py`);
- bytes per value on the wire against float32.

    .venv/bin/python bench/paillier_speed.py            # about two minutes
    .venv/bin/python bench/paillier_speed.py --quick    # a smoke test

Each rate is measured on a sample of chunks and holds per chunk (every chunk costs the same); the offline
cost per round is the sample's rate extrapolated. Other jobs share this machine's cores: read the ratios
(each against a baseline measured in the same run), the load average printed beside them, and the cores
each all-core step obtained (its CPU seconds over its wall seconds).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import secrets
import time
from concurrent.futures import ProcessPoolExecutor

import gmpy2
import numpy as np
from bench_timing import seconds
from phe import paillier as phe_paillier

from protocol.crypto import PaillierParams, PaillierScheme, generate_scheme, scheme_from_public
from protocol.crypto.obfuscators import default_workers
from protocol.crypto.paillier_crt import CrtDecryptor

SEED = 7


def old_obfuscators(n: int, count: int) -> int:
    """`count` obfuscators the old way: a fresh full-size `r`, `r^n mod n^2`. Returns how many it made."""
    n_mpz = gmpy2.mpz(n)
    n_square = n_mpz * n_mpz
    for _ in range(count):
        gmpy2.powmod(gmpy2.mpz(secrets.randbelow(n - 1) + 1), n_mpz, n_square)
    return count


def old_all_cores(n: int, count: int, workers: int) -> float:
    """Seconds for `count` old obfuscators over `workers` processes (started before the clock)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as executor:
        list(executor.map(old_obfuscators, [n] * workers, [1] * workers))  # start the workers
        share = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
        started = time.perf_counter()
        list(executor.map(old_obfuscators, [n] * workers, share))
        return time.perf_counter() - started


def rate(values: float, seconds_taken: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if values / seconds_taken >= scale:
            return f"{values / seconds_taken / scale:.3g} {unit}values/s"
    return f"{values / seconds_taken:.3g} values/s"


def children_cpu_s() -> float:
    """CPU seconds the live worker processes of this one have used (Linux `/proc`)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for child in multiprocessing.active_children():
        with open(f"/proc/{child.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def joined_children_cpu_s() -> float:
    """CPU seconds the worker processes of this one that have exited and been joined used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cores_obtained(cpu_s: float, wall_s: float) -> str:
    """How many cores the work got: CPU seconds over wall seconds (other jobs take the rest)."""
    return f"{cpu_s / wall_s:.2f} cores obtained"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2048, help="chunks sampled (fixed base, online)")
    parser.add_argument("--old-chunks", type=int, default=96, help="chunks sampled for the old path")
    parser.add_argument("--round-values", type=int, default=1_000_000, help="values per upload")
    parser.add_argument("--quick", action="store_true", help="small samples: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.old_chunks = 64, 8
    if min(args.chunks, args.old_chunks, args.round_values) < 1:
        parser.error("--chunks, --old-chunks and --round-values must be positive")
    started = time.perf_counter()
    cores = default_workers()
    cloud = generate_scheme(PaillierParams())
    assert isinstance(cloud, PaillierScheme)
    params = cloud.params
    n = int.from_bytes(cloud.public_bytes(), "big")
    slots = params.slots
    print(f"packed Paillier, {params.key_bits}-bit key, {slots} values per chunk, {cores} cores; {load()}")

    # -- obfuscators ------------------------------------------------------------------------------------
    old_one = seconds(lambda: old_obfuscators(n, args.old_chunks)) / args.old_chunks
    old_all = old_all_cores(n, args.old_chunks * cores, cores) / (args.old_chunks * cores)
    client = scheme_from_public(params, cloud.public_bytes())
    assert isinstance(client, PaillierScheme)
    pool = client.pool
    pool.fill(1, workers=1)  # this process's table
    table_s = seconds(lambda: type(pool)(n).fill(1, workers=1))
    one_count = max(1, args.chunks // 4)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    pool.fill(one_count, workers=1)
    one_wall = time.perf_counter() - wall_before
    one_cores = cores_obtained(time.process_time() - cpu_before, one_wall)
    new_one = one_wall / one_count
    pool.fill(cores, workers=cores)  # start the workers and build their tables
    cpu_before, wall_before = children_cpu_s(), time.perf_counter()
    pool.fill(args.chunks, workers=cores)
    fill_wall = time.perf_counter() - wall_before
    fill_cores = cores_obtained(children_cpu_s() - cpu_before, fill_wall)
    new_all = fill_wall / args.chunks
    print(f"\nobfuscators ({load()})")
    print(f"  old r^n, fresh r       1 core: {rate(slots, old_one)}   {cores} cores: {rate(slots, old_all)}")
    print(
        f"  fixed base h^a         1 core: {rate(slots, new_one)} ({old_one / new_one:.1f}x old; {one_cores})   "
        f"{cores} cores: {rate(slots, new_all)} ({old_all / new_all:.1f}x old, "
        f"{new_one / new_all:.2f}x its 1 core; {fill_cores})"
    )
    print(f"  table for one base: {table_s:.2f} s, {pool.exponent_bits}-bit exponents")

    # -- online encryption ------------------------------------------------------------------------------
    x = np.random.default_rng(SEED).uniform(-params.clip, params.clip, args.chunks * slots)
    repeats = 3
    if len(pool) < repeats * args.chunks:  # fresh obfuscators for each timed run: each is used once
        pool.fill(repeats * args.chunks - len(pool), workers=cores)
    wire = b""

    def online() -> None:
        nonlocal wire
        wire = client.serialize(client.encrypt(x))

    online_s = seconds(online, repeat=repeats)
    print(f"\nonline encryption, obfuscators ready ({load()})")
    print(
        f"  pack + multiply + serialise: {rate(x.size, online_s)} on 1 core ({x.size:,} values, "
        f"best of {repeats})"
    )
    per_value = len(wire) / x.size
    print(f"  wire: {per_value:.2f} bytes per value, {per_value / 4:.2f}x float32")

    # -- offline cost per round -------------------------------------------------------------------------
    chunks = -(-args.round_values // slots)
    print(f"\noffline cost of one upload's obfuscators at {args.round_values:,} values ({chunks:,} chunks)")
    print(
        f"  old: {chunks * old_one:.1f} s on 1 core, {chunks * old_all:.1f} s on {cores}   "
        f"fixed base: {chunks * new_one:.1f} s on 1 core, {chunks * new_all:.1f} s on {cores} "
        f"(+{table_s:.2f} s per worker for its table, once per key)"
    )

    # -- decryption ----------------------------------------------------------------------------------
    ciphertext = cloud.deserialize(wire, expected_length=x.size)
    payload = list(ciphertext.payload)
    size = params.key_bits // 8
    secret = cloud.secret_bytes()
    p, q = (int.from_bytes(secret[i * size : (i + 1) * size], "big") for i in (1, 2))
    phe_key = phe_paillier.PaillierPrivateKey(phe_paillier.PaillierPublicKey(n), p, q)
    old_sample = payload[: max(1, args.old_chunks)]
    phe_s = seconds(lambda: [phe_key.raw_decrypt(int(c)) for c in old_sample]) / len(old_sample)
    decryptor = CrtDecryptor(p, q)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    decryptor.decrypt(payload, workers=1)
    crt_one_wall = time.perf_counter() - wall_before
    crt_one_cores = cores_obtained(time.process_time() - cpu_before, crt_one_wall)
    crt_one = crt_one_wall / len(payload)
    # The worker processes' CPU seconds count once they are joined (RUSAGE_CHILDREN).
    cpu_before, wall_before = time.process_time() + joined_children_cpu_s(), time.perf_counter()
    decryptor.decrypt(payload, workers=cores, parallel_min=1)
    crt_wall = time.perf_counter() - wall_before
    crt_cores = cores_obtained(time.process_time() + joined_children_cpu_s() - cpu_before, crt_wall)
    crt_all = crt_wall / len(payload)
    print(f"\ndecryption ({load()})")
    print(f"  phe raw_decrypt, one at a time: {rate(slots, phe_s)}")
    print(f"  CRT batches, 1 thread: {rate(slots, crt_one)} ({phe_s / crt_one:.2f}x phe; {crt_one_cores})")
    print(
        f"  CRT batches, {cores} processes: {rate(slots, crt_all)} ({phe_s / crt_all:.2f}x phe, "
        f"{crt_one / crt_all:.2f}x 1 thread; {crt_cores}); a round of {args.round_values:,} values: "
        f"{chunks * crt_all:.1f} s (phe: {chunks * phe_s:.1f} s)"
    )
    assert np.allclose(cloud.decrypt(ciphertext), x, atol=params.step)
    pool.close()
    print(f"\ntotal bench time {time.perf_counter() - started:.1f} s; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
