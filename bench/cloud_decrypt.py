"""The cloud's side of a round: decryption over threads against processes, and its memory closing a round.

Prints, in one run on this machine:
- packed Paillier decryption (CRT, a 2048-bit key) of a sum of `--values` values: values/s on 1 thread, on
  N threads (slices of the sum on a thread pool, what the cloud did before) and on N worker processes
  (`protocol.crypto.paillier_crt`, what it does now), each against 1 thread;
- a masking round's unmasking of `--edges` mask corrections of that length (beside the decryption);
- CKKS decryption of the same length on 1 thread and on N threads;
- the cloud's peak memory closing a round of `--edges` CKKS edge sums of `--values` values stored in a real
  redis-server: every stored sum read and deserialised at once (before) against the streaming reader
  (`cloud_server.stored_sums`: one edge's value at a time, folded into a running sum), each in a fresh
  process, with the peak resident set over the process's size once it holds the key.

    .venv/bin/python bench/cloud_decrypt.py            # 1 M values, 4 edges: a few minutes
    .venv/bin/python bench/cloud_decrypt.py --quick    # a smoke test

Other jobs share this machine's cores: read the ratios (each against a baseline measured in the same run)
and the load average printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import math
import multiprocessing
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from paillier_speed import joined_children_cpu_s

from cloud_server.records import pack_aggregate, unpack_aggregate
from cloud_server.stored_sums import read_sums
from fedlora.launcher import free_port
from fedlora.redis_process import RedisProcess
from protocol.aggregation import checked_sum, fold
from protocol.crypto import CKKSParams, PaillierParams, generate_scheme, scheme_from_secret
from protocol.crypto.obfuscators import default_workers
from protocol.crypto.paillier_crt import CrtDecryptor
from protocol.messages import EdgeAggregate
from protocol.secagg.cohort import residue_bytes, residues_from_bytes, ring_sum
from services.store import RedisStore

SEED = 22
KEY = "bench:round:aggregates"


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def rate(values: int, seconds: float) -> str:
    return f"{values / seconds / 1e3:,.1f} k values/s ({seconds:.1f} s)"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def timed_cores(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """`fn()`, its wall seconds, and the cores this process and its joined children obtained meanwhile."""
    cpu_before = time.process_time() + joined_children_cpu_s()
    out, seconds = timed(fn)
    return out, seconds, (time.process_time() + joined_children_cpu_s() - cpu_before) / seconds


def paillier_decryption(values: int, workers: int) -> None:
    scheme = generate_scheme(PaillierParams())
    secret = scheme.secret_bytes()
    size = scheme.params.key_bits // 8
    p, q = (int.from_bytes(secret[i * size : (i + 1) * size], "big") for i in (1, 2))
    n = gmpy2.mpz(p) * q
    chunks = math.ceil(values / scheme.slots)
    # The cost of a CRT decryption does not depend on the plaintext: random elements of Z_(n^2) stand in for
    # the sum's chunks.
    ciphertexts = [gmpy2.mpz(secrets.randbelow(int(n * n) - 1) + 1) for _ in range(chunks)]
    decryptor = CrtDecryptor(p, q)
    print(
        f"\npacked Paillier decryption of {values:,} values ({chunks:,} chunks of {scheme.slots}), {load()}"
    )
    one, one_s, one_cores = timed_cores(lambda: decryptor.decrypt_here(ciphertexts))
    print(f"  1 thread:              {rate(values, one_s)}; {one_cores:.2f} cores obtained")
    bounds = [chunks * i // workers for i in range(workers + 1)]
    slices = [ciphertexts[a:b] for a, b in itertools.pairwise(bounds)]
    with ThreadPoolExecutor(workers) as pool:
        threaded, threads_s, threads_cores = timed_cores(
            lambda: [m for part in pool.map(decryptor.decrypt_here, slices) for m in part]
        )
    print(
        f"  {workers} threads:             {rate(values, threads_s)}, {one_s / threads_s:.2f}x 1 thread; "
        f"{threads_cores:.2f} cores obtained"
    )
    spread, processes_s, processes_cores = timed_cores(
        lambda: decryptor.decrypt(ciphertexts, workers=workers, parallel_min=1)
    )
    print(
        f"  {workers} processes:           {rate(values, processes_s)}, {one_s / processes_s:.2f}x 1 thread, "
        f"{threads_s / processes_s:.2f}x {workers} threads; {processes_cores:.2f} cores obtained; {load()}"
    )
    if not one == threaded == spread:
        raise AssertionError("threads or processes decrypted other plaintexts than one thread")


def unmasking(values: int, edges: int) -> None:
    """What a masking round's unmasking adds beside its decryption: each edge's mask correction read from
    its wire form and added to the running ring sum, as `protocol.aggregation.unmasked_sum` does."""
    params = PaillierParams(masking=True)
    bits = generate_scheme(params).ring_bits
    assert bits is not None
    rng = np.random.default_rng(SEED)
    corrections = [
        residue_bytes(rng.integers(0, 1 << bits, values, dtype=np.uint64), bits) for _ in range(edges)
    ]

    def unmask() -> np.ndarray:
        fix = np.zeros(values, dtype=np.uint64)
        for correction in corrections:
            fix = ring_sum([fix, residues_from_bytes(correction, bits=bits, length=values)], bits, values)
        return fix

    _, seconds = timed(unmask)
    print(
        f"\nunmasking {edges} edges' mask corrections of {values:,} values: {seconds:.3f} s on 1 thread; {load()}"
    )


def ckks_decryption(values: int, workers: int) -> None:
    scheme = generate_scheme(CKKSParams())
    x = np.random.default_rng(SEED).uniform(-1.0, 1.0, values)
    ciphertext = scheme.encrypt(x)
    secret_key = scheme._context.secret_key()  # the backend's own call, timed without the range check
    chunks = list(ciphertext.payload)
    print(f"\nCKKS decryption of {values:,} values ({len(chunks)} chunks), {load()}")
    _, one_s = timed(lambda: [v.decrypt(secret_key) for v in chunks])
    print(f"  1 thread:              {rate(values, one_s)}")
    with ThreadPoolExecutor(workers) as pool:
        _, threads_s = timed(lambda: list(pool.map(lambda v: v.decrypt(secret_key), chunks)))
    print(
        f"  {workers} threads:             {rate(values, threads_s)}, {one_s / threads_s:.2f}x 1 thread; {load()}"
    )


def peak_kib() -> int:
    """This process's peak resident set so far (`VmHWM`), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def close_round(
    mode: str, url: str, secret: bytes, sealed: dict[str, str], length: int
) -> tuple[int, int, float, bytes]:
    """In a fresh process: decrypt the stored round `mode` `before` (every value read and deserialised at
    once, then summed) or `streaming` (`read_sums` and `fold`, as the cloud closes a round). Returns (peak
    KiB once the key is loaded, peak KiB at the end, seconds, the sum's float32 bytes)."""
    scheme = scheme_from_secret(CKKSParams(), secret)
    baseline = peak_kib()

    async def before() -> np.ndarray:
        store = RedisStore(url)
        try:
            values = await store.hgetall(KEY)
        finally:
            await store.close()
        parts = [
            scheme.deserialize(unpack_aggregate(values[e])[1], expected_length=length) for e in sorted(values)
        ]
        return scheme.decrypt(scheme.sum(parts))

    async def streaming() -> np.ndarray:
        store = RedisStore(url)

        async def quarantine(edge_id: str, value: bytes | None, why: str) -> None:
            raise AssertionError(f"edge {edge_id}'s sum does not read back: {why}")

        try:
            sums, _, _ = await read_sums(store, KEY, sealed, quarantine=quarantine)
            ciphertexts = sums.ciphertexts

            def decrypt() -> np.ndarray:
                total = fold(scheme, ciphertexts, length=length)
                return checked_sum(scheme, total, ciphertexts, edges=sums.edges, k=1)

            return await asyncio.to_thread(decrypt)
        finally:
            await store.close()

    vector, seconds = timed(lambda: asyncio.run(before() if mode == "before" else streaming()))
    return baseline, peak_kib(), seconds, vector.astype(np.float32).tobytes()


def closing_memory(values: int, edges: int) -> None:
    scheme = generate_scheme(CKKSParams())
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as folder:
        redis = RedisProcess(Path(folder), port=free_port(), appendfsync="no").start()
        try:
            client = redis.admin_client()
            expected = np.zeros(values)
            sealed = {}
            for index in range(edges):
                x = rng.uniform(-1.0, 1.0, values)
                expected += x
                edge_id = f"edge-{index}"
                aggregate = EdgeAggregate.model_construct(
                    federation_id="bench",
                    round=0,
                    basis_version=0,
                    edge_id=edge_id,
                    ciphertext=scheme.serialize(scheme.encrypt(x)),
                    contributions=(),
                    idempotency_key=f"bench:{edge_id}",
                    signature=b"",
                    late=(),
                    plan_sha256=None,
                    mask_correction=None,
                )
                value = pack_aggregate(aggregate, received_at=datetime.now(UTC))
                client.hset(KEY, edge_id, value)
                sealed[edge_id] = hashlib.sha256(value).hexdigest()
            megabytes = sum(client.hstrlen(KEY, e) for e in sealed) / len(sealed) / 2**20
            client.close()
            print(
                f"\nclosing a round of {edges} CKKS edge sums of {values:,} values ({megabytes:.0f} MiB each), {load()}"
            )
            context = multiprocessing.get_context("spawn")
            results = {}
            for mode in ("before", "streaming"):
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    results[mode] = pool.submit(
                        close_round, mode, redis.url, scheme.secret_bytes(), sealed, values
                    ).result()
            for mode, (baseline, peak, seconds, _) in results.items():
                print(
                    f"  {mode:>9}: peak RSS {peak / 2**10:,.0f} MiB, {(peak - baseline) / 2**10:,.0f} MiB over the "
                    f"process with its key; {seconds:.1f} s"
                )
            grown = {m: r[1] - r[0] for m, r in results.items()}
            print(f"  streaming / before, memory grown: {grown['streaming'] / grown['before']:.2f}; {load()}")
            if results["before"][3] != results["streaming"][3]:
                raise AssertionError("streaming decrypted another sum than reading every value at once")
            got = np.frombuffer(results["streaming"][3], dtype=np.float32)
            if not np.allclose(got, expected, atol=1e-2):
                raise AssertionError("the decrypted sum is not the sum of the edges' vectors")
        finally:
            redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=4)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--quick", action="store_true", help="20,000 values: a smoke test")
    args = parser.parse_args()
    values = 20_000 if args.quick else args.values
    started = time.perf_counter()
    print(f"cloud decryption bench: {values:,} values, {args.workers} workers, {load()}")
    paillier_decryption(values, args.workers)
    unmasking(values, args.edges)
    ckks_decryption(values, args.workers)
    closing_memory(values, args.edges)
    print(f"\ntotal bench time {time.perf_counter() - started:.1f} s; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
