"""The cloud closes a round from edge sums read from the store one at a time, decrypted over worker
processes (issue 22, item 3). Real crypto, real worker processes, the in-memory store and a real Redis; the
memory bound is measured by `bench/cloud_decrypt.py`, not here."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from cloud_server import closing
from cloud_server.records import StoredAggregate, pack_aggregate
from cloud_server.stored_sums import StoredSumChangedError, read_sums
from protocol.crypto import DecryptionWorkerError, PaillierParams, generate_scheme, paillier_crt
from protocol.messages import EdgeAggregate, RoundState
from services import keyspace
from services.store import StateStore
from tests.cloud.harness import Federation, running_cloud, small_spec, weighted_mean
from tests.crt_faults import dying_slice, raising_slice

pytestmark = pytest.mark.anyio
THREE_EDGES = {
    "edge-1": ("client-a", "client-b"),
    "edge-2": ("client-c", "client-d"),
    "edge-3": ("client-e", "client-f"),
}
KEY = "test:round:aggregates"


async def test_a_round_of_three_paillier_edges_closes_over_worker_processes_after_one_died(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three edges' sums are read one at a time and decrypted over two worker processes. The first attempt's
    worker dies: the attempt fails with `DecryptionWorkerError`, counted and nothing lost (the round stays
    aggregating, its sums stored), and the retry after the back-off closes the round to the weighted mean
    of the six hospitals' deltas, worked out here in the clear."""
    # Prepare: every decryption over processes, however small; the first attempt's workers die.
    rng = np.random.default_rng(22)
    monkeypatch.setattr(paillier_crt, "PARALLEL_MIN", 1)
    monkeypatch.setattr(paillier_crt, "decrypt_slice", dying_slice)
    weights = {"client-a": 1.0, "client-b": 2.0, "client-c": 0.5, "client-d": 3.0, "client-e": 1.5}
    settings = {"decrypt_workers": 2, "close_retry_s": 10.0}
    async with running_cloud(**settings) as cloud:
        spec = small_spec(he=PaillierParams(), rounds=2)
        fed = await Federation.create(cloud.http, spec, THREE_EDGES)
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)

        # Execute: the third edge's sum tries to close the round.
        for edge_id in THREE_EDGES:
            aggregate = await fed.aggregate(cloud, edge_id, 0, deltas[edge_id], weights=weights)
            assert (await fed.post(cloud.http, aggregate)).status_code == 202
        retrying = await cloud.status(fed.fid, 0)
        monkeypatch.undo()  # the workers live again: the next attempt is a real one
        monkeypatch.setattr(paillier_crt, "PARALLEL_MIN", 1)
        cloud.clock.advance(10.0)
        await cloud.tick()

        # Assert
        assert retrying.state is RoundState.AGGREGATING
        assert retrying.close_attempts == 1
        assert retrying.close_error is not None
        assert retrying.close_error.startswith("DecryptionWorkerError: a decryption worker process stopped")
        closed = await cloud.status(fed.fid, 0)
        assert closed.state is RoundState.CLOSED and closed.clients_contributed == 6
        every = {cid: d for edge in deltas.values() for cid, d in edge.items()}
        expected = weighted_mean(every, weights)
        # Each of the six encodings is off by at most its encoding error, then divided by the total weight 9.
        assert isinstance(spec.he, PaillierParams)
        bound = 6 * spec.he.encoding_error / 9.0 + 1e-6  # and float32 rounding of the published vector
        assert np.max(np.abs(await cloud.vector(fed.fid, 1) - expected)) <= bound


async def test_an_edge_sum_altered_while_the_round_decrypts_fails_the_attempt_and_the_next_quarantines_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored edge sum that changes after the closer's first read (which found it as sealed) is refused
    when the decryption reads it again: the attempt fails with `StoredSumChangedError`, counted, nothing
    decrypted from it; the next attempt's first read quarantines it and the round fails naming it."""
    # Prepare: the decryption alters edge-2's stored sum before it reads the sums again.
    rng = np.random.default_rng(23)
    loop = asyncio.get_running_loop()
    real = closing.aggregate
    altered: list[bytes] = []

    def altering(*args: object, **kwargs: object) -> object:
        def on_loop(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

        value = on_loop(cloud.store.hget(key, "edge-2"))
        altered.append(value[:-1] + bytes([value[-1] ^ 1]))
        on_loop(cloud.store.hset(key, "edge-2", altered[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(closing, "aggregate", altering)
    async with running_cloud(close_retry_s=10.0) as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        key = keyspace.fed_round_aggregates(fed.fid, 0)
        deltas = fed.deltas(rng)

        # Execute
        for edge_id in ("edge-1", "edge-2"):
            aggregate = await fed.aggregate(cloud, edge_id, 0, deltas[edge_id])
            assert (await fed.post(cloud.http, aggregate)).status_code == 202
        retrying = await cloud.status(fed.fid, 0)
        monkeypatch.undo()
        cloud.clock.advance(10.0)
        await cloud.tick()
        failed = await cloud.status(fed.fid, 0)
        quarantined = await cloud.store.get(keyspace.fed_quarantine(fed.fid, "round:0:aggregate:edge-2"))

    # Assert
    assert retrying.state is RoundState.AGGREGATING and retrying.close_attempts == 1
    assert retrying.close_error == (
        f"StoredSumChangedError: edge 'edge-2''s sum in {key} is not the value recorded when the round was "
        "sealed"
    )
    assert failed.state is RoundState.FAILED
    assert failed.failure == "stored edge sums that do not read back were quarantined: edge-2"
    assert quarantined == altered[0]


def stored(edge_id: str, ciphertext: bytes) -> bytes:
    aggregate = EdgeAggregate.model_construct(
        federation_id="fed-1",
        round=0,
        basis_version=0,
        edge_id=edge_id,
        ciphertext=ciphertext,
        contributions=(),
        idempotency_key=f"test:{edge_id}",
        signature=b"",
        late=(),
        plan_sha256=None,
        mask_correction=None,
    )
    return pack_aggregate(aggregate, received_at=datetime(2026, 1, 1, tzinfo=UTC))


async def test_the_reader_quarantines_what_does_not_read_back_and_refuses_a_sum_changed_after_it(
    state_store: StateStore,
) -> None:
    """The first pass hands each sum that is not the one sealed (altered, stored after the seal, gone) to
    quarantine with its value and keeps the headers of the others; a sum altered after that pass is refused
    when the decryption reads it again (`StoredSumChangedError`: the attempt fails and is retried, and the
    next first pass quarantines it), and the reader refuses to block the event loop."""
    # Prepare
    values = {edge: stored(edge, edge.encode() * 10) for edge in ("edge-1", "edge-2", "edge-3", "edge-4")}
    for edge in ("edge-1", "edge-2", "edge-3", "late-edge"):
        await state_store.hset(KEY, edge, values.get(edge, values["edge-1"]))
    sealed = {edge: hashlib.sha256(values[edge]).hexdigest() for edge in values}
    sealed["edge-3"] = hashlib.sha256(b"another value").hexdigest()
    quarantined: dict[str, tuple[bytes | None, str]] = {}

    async def quarantine(edge_id: str, value: bytes | None, why: str) -> None:
        quarantined[edge_id] = (value, why)

    # Execute
    sums, unreadable, _ = await read_sums(state_store, KEY, sealed, quarantine=quarantine)
    first = await asyncio.to_thread(lambda: bytes(sums.ciphertexts[0]))
    await state_store.hset(KEY, "edge-2", values["edge-1"])

    # Assert
    assert sums.edges == ["edge-1", "edge-2"]
    assert [h.edge_id for h in sums.headers.values()] == ["edge-1", "edge-2"]
    assert isinstance(sums.headers["edge-1"], StoredAggregate)
    assert first == b"edge-1" * 10
    assert sorted(unreadable) == sorted(quarantined) == ["edge-3", "edge-4", "late-edge"]
    assert quarantined["edge-3"] == (values["edge-3"], unreadable["edge-3"])
    assert "not the one recorded" in unreadable["edge-3"]
    assert quarantined["edge-4"] == (None, "no stored value")
    assert "not recorded" in quarantined["late-edge"][1]
    with pytest.raises(StoredSumChangedError, match=r"edge 'edge-2'.s sum .* is not the value recorded"):
        await asyncio.to_thread(lambda: sums.ciphertexts[1])
    with pytest.raises(RuntimeError, match="from a worker thread"):
        sums.without(["edge-1"]).ciphertexts[0]


def test_decryption_over_worker_processes_equals_phe_and_survives_a_worker_that_dies_or_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over two worker processes the plaintexts are phe's own; a worker that dies or raises is a
    `DecryptionWorkerError`, and the next call on the same decryptor decrypts as before (nothing kept)."""
    # Prepare: raw plaintexts encrypted with the scheme's own obfuscators.
    scheme = generate_scheme(PaillierParams())
    n = scheme.pool.n
    rng = np.random.default_rng(3)
    plaintexts = [0, 1, n - 1] + [int(rng.integers(0, 2**62)) * (n // 2**62) for _ in range(37)]
    ciphertexts = scheme._encrypt_packed(plaintexts)
    private = scheme._private_key
    assert private is not None
    decryptor = paillier_crt.CrtDecryptor(private.p, private.q)

    # Execute
    outcomes: list[str] = []
    for fault in (dying_slice, raising_slice):
        monkeypatch.setattr(paillier_crt, "decrypt_slice", fault)
        with pytest.raises(DecryptionWorkerError) as failed:
            decryptor.decrypt(ciphertexts, workers=2, parallel_min=1)
        outcomes.append(str(failed.value))
        monkeypatch.undo()
    spread = decryptor.decrypt(ciphertexts, workers=2, parallel_min=1)

    # Assert
    assert outcomes[0].startswith("a decryption worker process stopped")
    assert outcomes[1] == "a decryption worker failed: ArithmeticError: injected"
    assert [private.raw_decrypt(int(c)) for c in ciphertexts] == plaintexts
    assert [int(m) for m in spread] == plaintexts
