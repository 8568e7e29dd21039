"""Adversarial review of issue 22's two changes: the streaming edge (stored uploads folded off the request
path by one leased folder per sum) and fast Paillier encryption (DJN obfuscators on a fixed base, CRT
decryption over threads). Part A's tests reproduced the defects the review found (fixed since); the others
probe promises that held.

The edge's faults are injected into a real store (both backends, as the cloud's tests run): a stored upload
deleted or altered after its 202, as an operator, an eviction or an attacker with store access would leave it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from edge_aggregator.folder import Folder
from edge_aggregator.ledger import RoundLedger
from edge_aggregator.sum_seal import SumSeal
from protocol.crypto import PaillierParams, generate_scheme
from protocol.crypto.obfuscators import ObfuscatorPool
from protocol.crypto.paillier import PaillierScheme
from protocol.crypto.paillier_crt import BATCH, CrtDecryptor
from protocol.messages import DropReason
from services import keyspace
from services.store import StateStore
from tests.edge.conftest import client_scheme, make_world, secret_scheme  # noqa: F401
from tests.edge.harness import EID, FID, LENGTH, World, _inline

ATOL = 1e-5
#: Passes over a round's starting point after which a folder is taken to be spinning: a healthy settle of a
#: handful of uploads reads it a few times (once per batch, once more to see nothing is pending).
SPIN_LIMIT = 50


class SpinningError(Exception):
    """The injected bound: the folder read its starting point SPIN_LIMIT times without finishing."""


class CountingLedger(RoundLedger):
    """The edge's ledger, raising `SpinningError` once a folder has read its starting point SPIN_LIMIT times
    (a folder that never yields to the event loop cannot be stopped by a timeout)."""

    starts = 0

    async def fold_start(self, round_: int, origin: int) -> Any:
        self.starts += 1
        if self.starts > SPIN_LIMIT:
            raise SpinningError(f"fold_start read {self.starts} times for round {round_}")
        return await super().fold_start(round_, origin)


def counting_folder(world: World, *, batch: int = 4) -> Folder:
    """`World.folder` on a `CountingLedger`."""
    seal = SumSeal.derive(world.edge_key, edge_id=EID, federation_id=FID)
    ledger = CountingLedger(world.store, edge_id=EID, federation_id=FID, seal=seal)
    return Folder(ledger, scheme=world.public, length=LENGTH, run=_inline, batch=batch)


def watch_upload_reads(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many stored uploads each read of the (real) store hands over at once: one entry per `get` of an
    upload and per `transaction` that reads any. The store itself is untouched; its methods are observed."""
    seen: list[int] = []
    prefix = keyspace.edge_uploads_prefix(EID, FID, 0)
    get, transaction = store.get, store.transaction

    async def watched_get(key: str) -> bytes | None:
        if key.startswith(prefix):
            seen.append(1)
        return await get(key)

    async def watched_transaction(keys: Sequence[str], fn: Any) -> Any:
        if uploads := sum(key.startswith(prefix) for key in keys):
            seen.append(uploads)
        return await transaction(keys, fn)

    monkeypatch.setattr(store, "get", watched_get)
    monkeypatch.setattr(store, "transaction", watched_transaction)
    return seen


async def stored_round(world: World) -> RoundLedger:
    """Every hospital's upload for round 0 accepted and stored, none folded."""
    ledger = world.ledger()
    for hospital in world.hospitals.values():
        await ledger.add(world.update(hospital), capacity=world.public.max_summands)
    return ledger


def expected(world: World, clients: Sequence[str]) -> np.ndarray:
    return np.sum([world.hospitals[c].vector for c in clients], axis=0)


async def assert_round_holds(
    world: World, ledger: RoundLedger, others: Sequence[str], *, dropped: int
) -> None:
    """Round 0's manifest and sum hold exactly `others`, and `dropped` uploads are counted quarantined."""
    assert sorted(await ledger.manifest(0)) == sorted(others)
    np.testing.assert_allclose(await world.stored_sum(), expected(world, others), atol=ATOL)
    assert await ledger.dropped(0) == ({DropReason.RECORD_QUARANTINED: dropped} if dropped else {})


# -- A. the streaming edge ---------------------------------------------------------------------------------


def damaged(uploads: dict[str, bytes | None]) -> Any:
    """A `damage` case, named by the uploads it damages."""
    return pytest.param(uploads, id="-".join(sorted(uploads)))


#: Was: a manifest line whose stored upload is gone made the fold loop read the same start again, forever.
MISSING = damaged({"hosp-b": None})
#: Was: taking out the first altered upload re-summed every other stored upload, the second one among them.
TWO_ALTERED = damaged({"hosp-b": b"not a ciphertext", "hosp-d": b"not a ciphertext"})


@pytest.mark.anyio
@pytest.mark.parametrize("damage", [MISSING, TWO_ALTERED])
async def test_damaged_stored_uploads_do_not_stop_the_round(
    make_world: Callable[..., World],  # noqa: F811
    damage: dict[str, bytes | None],
) -> None:
    """Promise A(3): an altered or malformed stored upload cannot stop the round or poison the sum; each is
    taken out and counted dropped, and the sum holds exactly the others. `damage` names the uploads altered
    in the store after their 202 (None: the key is gone, evicted or deleted by hand, while the manifest still
    names it)."""
    # Prepare: five stored uploads, some damaged in the store.
    world = make_world(clients=5)
    ledger = await stored_round(world)
    for name, value in damage.items():
        key = keyspace.edge_upload(EID, FID, 0, name)
        await (world.store.delete(key) if value is None else world.store.set(key, value))

    # Execute
    settled = await counting_folder(world).settle(0)

    # Assert
    assert settled
    others = sorted(world.hospitals.keys() - damage.keys())
    await assert_round_holds(world, ledger, others, dropped=len(damage))


@pytest.mark.anyio
async def test_quarantining_an_altered_upload_holds_a_few_ciphertexts_not_the_cohort(
    make_world: Callable[..., World],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Promise A(4): the folder's memory is bounded by a few ciphertexts, whatever the cohort. Taking out one
    altered upload must not hold the whole cohort's ciphertexts at once (here 11 of 12)."""
    # Prepare: twelve stored uploads, the last one in client order altered; folded in batches of 4.
    world = make_world(clients=12)
    ledger = await stored_round(world)
    names = sorted(world.hospitals)
    await world.store.set(keyspace.edge_upload(EID, FID, 0, names[-1]), b"not a ciphertext")
    seen = watch_upload_reads(world.store, monkeypatch)

    # Execute
    assert await counting_folder(world).settle(0)

    # Assert: the upload is out and the sum exact; no read handed over more than one stored upload at once.
    assert seen, "the folder read no stored upload"
    assert max(seen) == 1, f"one read handed over {max(seen)} stored uploads at once"
    await assert_round_holds(world, ledger, names[:-1], dropped=1)


@pytest.mark.anyio
async def test_a_quarantined_sum_is_summed_again_one_upload_at_a_time(
    make_world: Callable[..., World],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Promises A(1) and A(4): a running sum altered in the store is quarantined alone; every upload is still
    stored, so the folder sums them again, one read per upload (no read hands over the cohort's ciphertexts),
    and none is dropped."""
    # Prepare: five uploads folded, the sum altered, a sixth upload stored (the folder reads the sum for it).
    world = make_world(clients=6)
    names = sorted(world.hospitals)
    ledger = world.ledger()
    for name in names[:-1]:
        await ledger.add(world.update(world.hospitals[name]), capacity=world.public.max_summands)
    assert await counting_folder(world).settle(0)
    await world.store.set(keyspace.edge_sum(EID, FID, 0), b"not a sum")
    await ledger.add(world.update(world.hospitals[names[-1]]), capacity=world.public.max_summands)
    seen = watch_upload_reads(world.store, monkeypatch)

    # Execute
    assert await counting_folder(world).settle(0)

    # Assert: all six in the sum, none dropped, none read more than one at a time.
    assert max(seen, default=0) <= 1, f"one read handed over {max(seen)} stored uploads at once"
    await assert_round_holds(world, ledger, names, dropped=0)


# -- B. fast Paillier -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paillier() -> PaillierScheme:
    """A federation's packed Paillier key pair at the smallest size the params accept."""
    scheme = generate_scheme(PaillierParams(key_bits=2048))
    assert isinstance(scheme, PaillierScheme)
    return scheme


def test_crt_decryption_equals_phe_for_edge_plaintexts(paillier: PaillierScheme) -> None:
    """Promise B: decryption equals phe's for every chunk, including 0, 1, n - 1, the packing limit
    (`2^(slots * slot_bits) - 1`) and values around n / 2, in batches that straddle BATCH, on 1 and 4 threads."""
    # Prepare: raw plaintexts at the edges, encrypted with pool obfuscators.
    n = paillier.pool.n
    params = paillier.params
    limit = (1 << (params.slots * params.slot_bits)) - 1
    rng = random.Random(22)
    plaintexts = [0, 1, 2, n - 1, n - 2, n // 2, n // 2 + 1, limit, limit - 1]
    plaintexts += [rng.randrange(n) for _ in range(BATCH + 7 - len(plaintexts))]
    ciphertexts = paillier._encrypt_packed(plaintexts)
    private = paillier._private_key
    assert private is not None
    decryptor = CrtDecryptor(private.p, private.q)

    # Execute
    one = decryptor.decrypt(ciphertexts, workers=1)
    four = decryptor.decrypt(ciphertexts, workers=4)

    # Assert: phe's private key reads the same plaintexts.
    by_phe = [private.raw_decrypt(int(c)) for c in ciphertexts]
    assert by_phe == plaintexts
    assert [int(m) for m in one] == plaintexts == [int(m) for m in four]


def test_obfuscators_taken_while_workers_fill_the_pool_are_all_distinct_nth_powers(
    paillier: PaillierScheme,
) -> None:
    """Promise B: each obfuscator is used once, also when `take` runs (the agent encrypting) while `fill`
    runs in another thread over worker processes (the agent precomputing while it trains), and taking past
    the pool computes fresh ones inline: every one handed out is distinct and an n-th residue (E(0) under
    phe's key)."""
    # Prepare: a pool filled over 2 worker processes from a background thread.
    pool = ObfuscatorPool(paillier.pool.n)
    private = paillier._private_key
    assert private is not None
    taken: list[Any] = []
    filler = threading.Thread(target=pool.fill, args=(300,), kwargs={"workers": 2})
    try:
        filler.start()
        # Execute: take while the fill runs, then past what the pool holds once it is done.
        while filler.is_alive():
            taken += pool.take(4)
        filler.join()
        taken += pool.take(len(pool) + 20)
    finally:
        pool.close()

    # Assert
    assert len(taken) >= 320
    assert len({int(r) for r in taken}) == len(taken)
    assert all(private.raw_decrypt(int(r)) == 0 for r in taken[::7])
