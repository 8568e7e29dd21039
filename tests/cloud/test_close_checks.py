"""The close makes receive's checks again on each stored sum before it decrypts any (`cloud_server.sum_checks`),
ends an attempt whose refusal names no sum still in the round, never decrypts a sum of fewer than `k`
encryptions on its own (`protocol.aggregation.checked_sum`), and decrypts in its own process when no worker
process can start (`protocol.crypto.paillier_crt`). Real crypto, the in-process cloud on both stores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cloud_server import closing
from protocol.aggregation import OutOfRangeSumError, checked_sum, fold
from protocol.crypto import PaillierParams, WorkersUnavailableError, generate_scheme, paillier_crt
from protocol.messages import RoundState
from services import keyspace
from services.identity import SigningKey
from tests.adversarial.test_review_issue20_noise import carry_into_the_next_slot, forged_upload
from tests.adversarial.test_review_issue22_close import (
    NoProcesses,
    decrypted_counts,
    store_under_another_field,
)
from tests.cloud.harness import Federation, running_cloud, small_spec, weighted_mean
from tests.crt_faults import dying_start

pytestmark = pytest.mark.anyio


async def test_a_stored_sum_not_signed_by_its_edge_is_quarantined_and_the_round_closes_from_the_others() -> (
    None
):
    """A sum stored, with its digest, under edge-2's hash field before the seal, naming edge-2 and its two
    hospitals (each line signed by its hospital) but signed by a key that is not edge-2's enrolled one, is
    never decrypted: the close copies it to quarantine, and at the deadline the round closes to the mean
    of edge-1's hospitals alone."""
    rng = np.random.default_rng(2211)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        forged = await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"], signer=SigningKey.generate())
        await store_under_another_field(cloud, fed, forged, "edge-2")
        honest = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"])
        assert (await fed.post(cloud.http, honest)).status_code == 202
        cloud.clock.advance(fed.spec.round_deadline_s + 1.0)
        await cloud.tick()
        status = await cloud.status(fed.fid, 0)
        published = await cloud.vector(fed.fid, 1)
        quarantined = await cloud.store.get(keyspace.fed_quarantine(fed.fid, "round:0:aggregate:edge-2"))

    assert status.state is RoundState.CLOSED and status.clients_contributed == 2
    assert quarantined is not None
    np.testing.assert_allclose(published, weighted_mean(deltas["edge-1"]), atol=1e-4)


async def test_a_refusal_that_names_no_sum_left_in_the_round_ends_it_after_one_decryption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refusal from the decryption that names no sum the round still holds would make the next pass the
    same one: the close decrypts once and fails the round, naming the sum, instead of decrypting again."""
    calls: list[int] = []

    def refusing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise OutOfRangeSumError(["edge-9"], "injected")

    monkeypatch.setattr(closing, "aggregate", refusing)
    rng = np.random.default_rng(2212)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            body = await fed.aggregate(cloud, edge_id, 0, deltas[edge_id])
            assert (await fed.post(cloud.http, body)).status_code == 202
        status = await cloud.status(fed.fid, 0)

    assert len(calls) == 1
    assert status.state is RoundState.FAILED and "edge-9" in (status.failure or "")


def test_the_per_edge_range_check_never_decrypts_a_sum_of_fewer_than_k_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a total fails its range check, each sum is decrypted on its own to name the one at fault, except
    a sum of fewer than `k` encryptions: it is named without being decrypted."""
    params = PaillierParams(clip=0.1)
    scheme = generate_scheme(params)
    length = 64
    rng = np.random.default_rng(2213)
    honest = scheme.sum([scheme.encrypt(rng.normal(0.0, 0.01, length)) for _ in range(2)])
    lone = forged_upload(scheme, length, chunk=0, add=carry_into_the_next_slot(params))
    wires = [scheme.serialize(honest), scheme.serialize(lone)]
    counts = decrypted_counts(monkeypatch)
    with pytest.raises(OutOfRangeSumError) as refused:
        checked_sum(scheme, fold(scheme, wires, length=length), wires, edges=["edge-1", "edge-3"], k=2)

    assert refused.value.edges == ("edge-3",)
    assert counts == [3, 2]  # the total, then edge-1's sum alone; never the one upload


def test_a_decryption_whose_workers_cannot_start_says_so_apart_from_one_whose_worker_died(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No worker process starting (spawn failing with EAGAIN, or every worker dying before it runs) is a
    `WorkersUnavailableError`, so that the cloud decrypts in its own process; the same decryptor then
    decrypts as before."""
    scheme = generate_scheme(PaillierParams())
    private = scheme._private_key
    assert private is not None
    plaintexts = [0, 1, 2, 3]
    ciphertexts = scheme._encrypt_packed(plaintexts)
    decryptor = paillier_crt.CrtDecryptor(private.p, private.q)

    messages = []
    for name, fault in (("ProcessPoolExecutor", NoProcesses), ("_started", dying_start)):
        monkeypatch.setattr(paillier_crt, name, fault)
        with pytest.raises(WorkersUnavailableError) as failed:
            decryptor.decrypt(ciphertexts, workers=2, parallel_min=1)
        messages.append(str(failed.value))
        monkeypatch.undo()

    assert messages[0].startswith("decryption worker processes could not start: [Errno 11]")
    assert messages[1].startswith("no decryption worker process started")
    assert [int(m) for m in decryptor.decrypt(ciphertexts, workers=2, parallel_min=1)] == plaintexts
