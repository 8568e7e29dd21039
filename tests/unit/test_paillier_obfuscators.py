"""Packed Paillier with DJN short-exponent obfuscators on a fixed base, and CRT decryption over threads,
checked against computations that do not use the code under test: phe's own private key, Python's `pow`,
numpy sums of the plaintexts."""

from __future__ import annotations

import os
import random
import signal

import gmpy2
import numpy as np
import pytest
from phe import paillier as phe_paillier

from protocol.crypto import CryptoError, PaillierParams, PaillierScheme, generate_scheme, scheme_from_public
from protocol.crypto import fixed_base as fixed_base_module
from protocol.crypto.fixed_base import FixedBase
from protocol.crypto.obfuscators import ObfuscatorPool
from protocol.crypto.paillier_crt import BATCH, CrtDecryptor


@pytest.fixture(scope="module")
def cloud() -> PaillierScheme:
    scheme = generate_scheme(PaillierParams())
    assert isinstance(scheme, PaillierScheme)
    return scheme


@pytest.fixture(scope="module")
def phe_key(cloud: PaillierScheme) -> phe_paillier.PaillierPrivateKey:
    size = cloud.params.key_bits // 8
    secret = cloud.secret_bytes()
    n, p, q = (int.from_bytes(secret[i * size : (i + 1) * size], "big") for i in range(3))
    return phe_paillier.PaillierPrivateKey(phe_paillier.PaillierPublicKey(n), p, q)


def _packed(total: np.ndarray, count: int, params: PaillierParams) -> list[int]:
    """The packed plaintexts of a sum of `count` encodings whose quantised values sum to `total`, from the
    definition: slot i of chunk j holds `total[j slots + i] + count offset` at bit `i slot_bits`."""
    offset = 2 ** (params.quant_bits - 1) - 1
    out = []
    for start in range(0, total.size, params.slots):
        chunk = total[start : start + params.slots]
        out.append(sum((int(v) + count * offset) << (i * params.slot_bits) for i, v in enumerate(chunk)))
    return out


def test_homomorphic_sum_decrypts_with_phe_to_the_numpy_sum(
    cloud: PaillierScheme, phe_key: phe_paillier.PaillierPrivateKey
) -> None:
    # Prepare: three hospitals' vectors of 2.5 chunks, each encrypted by its own public scheme (own base h)
    params = cloud.params
    rng = np.random.default_rng(3)
    length = 2 * params.slots + params.slots // 2
    xs = [rng.uniform(-params.clip, params.clip, length) for _ in range(3)]
    clients = [scheme_from_public(params, cloud.public_bytes()) for _ in xs]
    for client in clients:
        client.precompute(length)
    # Execute
    total = cloud.sum(client.encrypt(x) for client, x in zip(clients, xs, strict=True))
    # Assert: phe's raw decryption of each chunk is the packed sum of the quantised values, computed here
    step = params.clip / (2 ** (params.quant_bits - 1) - 1)
    quantised = sum(np.rint(x / step).astype(np.int64) for x in xs)
    assert [phe_key.raw_decrypt(int(c)) for c in total.payload] == _packed(quantised, 3, params)
    got = cloud.decrypt(total)
    assert np.max(np.abs(got - np.sum(xs, axis=0))) <= 3 * step / 2 * (1 + 1e-9)


def test_obfuscators_are_nth_powers_and_never_repeat_across_a_parallel_draw(
    cloud: PaillierScheme, phe_key: phe_paillier.PaillierPrivateKey
) -> None:
    # Prepare: a pool filled by two worker processes, then a few drawn in this one
    n = int.from_bytes(cloud.public_bytes(), "big")
    n_square = n * n
    pool = ObfuscatorPool(n)
    # Execute
    pool.fill(2000, workers=2)
    pool.fill(50, workers=1)
    drawn = [int(o) for o in pool.take(2050)]
    # Assert: all distinct, and each an n-th power (o^lambda = 1 mod n^2 holds for n-th powers only), so a
    # ciphertext made with it decrypts as before
    assert len(set(drawn)) == len(drawn) == 2050
    lam = (phe_key.p - 1) * (phe_key.q - 1)
    assert all(gmpy2.powmod(o, lam, n_square) == 1 for o in drawn[::97])
    assert gmpy2.powmod(2, lam, n_square) != 1  # the check does tell other residues apart


def test_the_exponent_comes_from_secrets_with_half_the_modulus_bits(
    cloud: PaillierScheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record what the table asks `secrets` for
    n = int.from_bytes(cloud.public_bytes(), "big")
    pool = ObfuscatorPool(n)
    asked: list[tuple[int, int]] = []
    real = fixed_base_module.secrets.randbits

    def recording(bits: int) -> int:
        value = real(bits)
        asked.append((bits, value))
        return value

    monkeypatch.setattr(fixed_base_module.secrets, "randbits", recording)
    # Execute
    obfuscator = pool.fresh()
    # Assert: one draw of ceil(k / 2) bits from secrets, and the obfuscator is the base to that power
    assert pool.exponent_bits == (n.bit_length() + 1) // 2 == 1024
    assert [bits for bits, _ in asked] == [1024]
    assert int(obfuscator) == pow(int(pool._base), asked[0][1], n * n)


def test_obfuscators_ignore_every_seedable_generator(cloud: PaillierScheme) -> None:
    # Prepare: two pools on the same key, the global generators seeded alike before each
    n = int.from_bytes(cloud.public_bytes(), "big")
    draws = []
    for _ in range(2):
        random.seed(0)
        np.random.seed(0)  # the global generator a careless encoder would draw from
        draws.append([int(o) for o in ObfuscatorPool(n).take(3)])
    # Assert
    assert not set(draws[0]) & set(draws[1])


def test_crt_decryption_over_threads_matches_phe(
    cloud: PaillierScheme, phe_key: phe_paillier.PaillierPrivateKey
) -> None:
    # Prepare: more ciphertexts than one batch, with random plaintexts, encrypted by phe itself
    rng = random.Random(5)
    public = phe_key.public_key
    plaintexts = [rng.randrange(public.n) for _ in range(2 * BATCH + 3)]
    ciphertexts = [gmpy2.mpz(public.raw_encrypt(m)) for m in plaintexts]
    decryptor = CrtDecryptor(phe_key.q, phe_key.p)  # either order
    # Execute
    threaded = decryptor.decrypt(ciphertexts, workers=2)
    inline = decryptor.decrypt(ciphertexts, workers=1)
    # Assert
    assert [int(m) for m in threaded] == [int(m) for m in inline] == plaintexts


def test_fixed_base_matches_pow_and_names_a_bad_exponent() -> None:
    # Prepare
    modulus = 2**127 - 1
    table = FixedBase(3, modulus, exponent_bits=20)
    # Assert
    for exponent in (0, 1, 255, 256, 2**20 - 1, 123_456):
        assert int(table.power(exponent)) == pow(3, exponent, modulus)
    with pytest.raises(ValueError, match=r"exponent must lie in \[0, 2\^20\)"):
        table.power(2**20)
    with pytest.raises(ValueError, match="exponent_bits must be >= 1, got 0"):
        FixedBase(3, modulus, exponent_bits=0)


@pytest.mark.parametrize(
    ("count", "workers", "message"),
    [(-1, None, "count must be >= 0, got -1"), (4, 0, "workers must be >= 1, got 0")],
)
def test_a_bad_fill_raises_a_crypto_error_naming_the_field(
    cloud: PaillierScheme, count: int, workers: int | None, message: str
) -> None:
    pool = ObfuscatorPool(int.from_bytes(cloud.public_bytes(), "big"))
    with pytest.raises(CryptoError, match=message):
        pool.fill(count, workers=workers)
    assert len(pool) == 0


def test_a_killed_worker_raises_a_crypto_error_and_the_next_fill_starts_new_ones(
    cloud: PaillierScheme,
) -> None:
    # Prepare: a pool whose two workers are running, one of them then killed
    n = int.from_bytes(cloud.public_bytes(), "big")
    pool = ObfuscatorPool(n)
    pool.fill(4, workers=2)
    executor = pool._executor
    assert executor is not None
    os.kill(next(iter(executor._processes)), signal.SIGKILL)
    # Execute / Assert: the fill says what happened, keeps what it had, and the next one works
    with pytest.raises(CryptoError, match="an obfuscator worker process stopped"):
        pool.fill(200, workers=2)
    pool.fill(4, workers=2)
    assert len(pool) >= 8
    pool.close()
