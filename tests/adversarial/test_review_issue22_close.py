"""Adversarial review of issue 22's streamed cloud close (`cloud_server/stored_sums.py`,
`protocol.aggregation.fold`, `checked_sum`, `cloud_server/closing.py`): the promises it found broken, each
now a test of the property that holds.

The attacker is a neighbour that can write the cloud's store before the round is sealed (the threat the
seal's digests are there for): it adds a hash field to the round's sums, with its digest recorded, whose
value is another edge's stored sum or one hospital's upload. The receive path keys a sum's field and its
header by the same edge id and checks its manifest against k; the close trusted the field for the
ciphertexts and the header for the contributions and the edge names, and checked neither again. It now
makes receive's checks again on each stored sum (`cloud_server.sum_checks`) before it decrypts any.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from cloud_server import closing
from cloud_server.records import pack_aggregate
from protocol.crypto import PaillierParams, paillier_crt
from protocol.crypto.base import HEScheme
from protocol.messages import CentralDPConfig, EdgeAggregate, RoundState
from services import keyspace
from services.identity import SigningKey
from tests.adversarial.test_review_issue20_noise import carry_into_the_next_slot, forged_upload

# The attacks run against the in-process cloud on both stores, as the cloud's own tests do.
from tests.cloud.conftest import (  # noqa: F401
    _every_cloud_on_the_state_store,
    anyio_backend,
    pytest_generate_tests,
)
from tests.cloud.harness import LAYOUT_SIZE, Cloud, Federation, running_cloud, small_spec, weighted_mean

pytestmark = pytest.mark.anyio
#: Decryptions of one round after which a close is taken to be looping: an honest close of three stored
#: sums decrypts the total, then at most once more for each edge it refuses.
DECRYPT_LIMIT = 8


class LoopingCloseError(Exception):
    """The injected bound: one round was decrypted DECRYPT_LIMIT times."""


async def store_under_another_field(
    cloud: Cloud, fed: Federation, aggregate: EdgeAggregate, field: str
) -> None:
    """Write `aggregate` (packed as `receive` packs it) into round 0's sums under hash field `field`, and its
    digest into the round's aggregate digests, as a neighbour with store access would before the seal."""
    value = pack_aggregate(aggregate, received_at=cloud.clock())
    await cloud.store.hset(keyspace.fed_round_aggregates(fed.fid, 0), field, value)
    digests_key = keyspace.fed_round_aggregate_digests(fed.fid, 0)
    digests = json.loads(await cloud.store.get(digests_key) or b"{}")
    digests[field] = hashlib.sha256(value).hexdigest()
    await cloud.store.set(digests_key, json.dumps(digests).encode())


#: A Paillier spec whose packed slots a hospital's forged upload can carry out of (`carry_into_the_next_slot`).
PACKED = PaillierParams(clip=0.1)
PAILLIER = small_spec(he=PACKED, central_dp=CentralDPConfig(clip_norm=0.1))


async def out_of_range_round(cloud: Cloud, rng: np.random.Generator) -> tuple[Federation, EdgeAggregate]:
    """A started `PAILLIER` federation and edge-2's signed sum for round 0 (not posted), out of range: its
    client-c uploaded a packed slot that carries into the next."""
    fed = await Federation.create(cloud.http, PAILLIER)
    await fed.start(cloud.http)
    deltas = fed.deltas(rng)
    honest = fed.scheme.encrypt(deltas["edge-2"]["client-d"])
    forged = forged_upload(fed.scheme, honest.length, chunk=0, add=carry_into_the_next_slot(PACKED))
    total = fed.scheme.serialize(fed.scheme.sum([forged, honest]))
    return fed, await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"], ciphertext=total)


def decrypted_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The encryptions each `HEScheme.decrypt` call is given from now on, in order (a list it fills)."""
    counts: list[int] = []
    real = HEScheme.decrypt

    def recorded(self: Any, ciphertext: Any, **kwargs: Any) -> Any:
        counts.append(ciphertext.count)
        return real(self, ciphertext, **kwargs)

    monkeypatch.setattr(HEScheme, "decrypt", recorded)
    return counts


async def post_edge_1_then(
    cloud: Cloud, fed: Federation, rng: np.random.Generator, second: EdgeAggregate
) -> None:
    """Post an honest edge-1 sum, then `second` (the round closes once both edges forwarded)."""
    for body in (await fed.aggregate(cloud, "edge-1", 0, fed.deltas(rng)["edge-1"]), second):
        assert (await fed.post(cloud.http, body)).status_code == 202


async def test_a_sum_stored_under_a_field_that_is_not_its_edge_never_reaches_the_published_model() -> None:
    """Property: the cloud publishes a global built only from sums it checked as its edges' own: a stored sum
    whose header names another edge than the hash field it is stored under (here edge-1's sum copied under
    field `edge-3`, its digest recorded before the seal) is refused (quarantined, the round failed naming
    it, as a sum that does not read back is) or left out, never added beside the original. Observed: the
    round closes, the fold adds three ciphertexts (edge-1's twice) while the weights count edge-1's two
    hospitals once, so the published model is (2 S1 + S2) / 4 instead of the mean of the four deltas."""
    rng = np.random.default_rng(2201)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        first = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"])
        await store_under_another_field(cloud, fed, first, "edge-3")
        for body in (first, await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"])):
            assert (await fed.post(cloud.http, body)).status_code == 202
        status = await cloud.status(fed.fid, 0)
        published = await cloud.vector(fed.fid, 1) if status.state is RoundState.CLOSED else None

    every = {cid: d for edge in deltas.values() for cid, d in edge.items()}
    if published is None:
        assert status.state is RoundState.FAILED and "edge-3" in (status.failure or "")
    else:
        np.testing.assert_allclose(published, weighted_mean(every), atol=1e-4)


async def test_a_refused_sum_under_another_field_does_not_make_the_close_decrypt_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: one close attempt ends (closed, failed, or counted and retried) after at most one decryption
    of the total plus one per edge it refuses; it never loops. Input: a Paillier round whose edge-2 sum is
    out of range (a hospital's packed slot carries into the next), and a copy of that sum stored under hash
    field `edge-3` with its digest recorded before the seal. Observed: the total fails the range check, the
    per-edge check names `edge-2` (the header's id), `remaining.without(["edge-2"])` removes field edge-2
    only, the copy under edge-3 fails the next total the same way, and the loop goes on: the close decrypts
    the round again and again (cut here at DECRYPT_LIMIT) while it renews its lease."""
    rng = np.random.default_rng(2202)
    real = closing.aggregate
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) >= DECRYPT_LIMIT:
            raise LoopingCloseError(f"round decrypted {len(calls)} times in one close")
        return real(*args, **kwargs)

    monkeypatch.setattr(closing, "aggregate", counted)
    async with running_cloud() as cloud:
        fed, second = await out_of_range_round(cloud, rng)
        await store_under_another_field(cloud, fed, second, "edge-3")
        await post_edge_1_then(cloud, fed, rng, second)
        status = await cloud.status(fed.fid, 0)

    assert len(calls) <= 3, (len(calls), status.state, status.close_error)


async def test_the_close_decrypts_no_stored_sum_of_fewer_than_k_hospitals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: every ciphertext the closing cloud decrypts holds at least k (here 2) hospitals' uploads,
    whatever the store holds. Input: before the seal, a neighbour with store access adds a hash field
    `edge-3` whose value (its digest recorded, its header naming edge-3 and one contribution) is one
    hospital's upload, as read off the wire; one hospital of edge-2 makes its edge's sum out of range (a
    packed slot carried into the next), so the total fails its range check. Observed: `checked_sum`
    decrypts each stored sum on its own to find the edge at fault, and the one-upload ciphertext is
    decrypted alone (count 1), handing the curious cloud one hospital's update without the round's noise."""
    rng = np.random.default_rng(2203)
    counts = decrypted_counts(monkeypatch)
    async with running_cloud() as cloud:
        fed, second = await out_of_range_round(cloud, rng)
        lone = await fed.aggregate(
            cloud,
            "edge-3",
            0,
            {"client-z": rng.normal(0.0, 0.01, LAYOUT_SIZE)},
            signer=SigningKey.generate(),
            plan_sha256="0" * 64,
        )
        await store_under_another_field(cloud, fed, lone, "edge-3")
        await post_edge_1_then(cloud, fed, rng, second)
        status = await cloud.status(fed.fid, 0)

    assert counts, (status.state, status.failure, status.close_error)
    assert min(counts) >= PAILLIER.min_clients_per_edge, (counts, status.state, status.failure)


class NoProcesses(ProcessPoolExecutor):
    """A process pool on a host whose process limit is reached (a container's pids limit, RLIMIT_NPROC):
    starting a worker fails as `fork`/`spawn` does there, with EAGAIN."""

    def _spawn_process(self) -> None:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")


async def test_an_honest_round_closes_when_no_decryption_worker_can_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Property: an honest round is never failed for want of decryption worker processes: the cloud holds
    the key and can decrypt in its own process (`FEDLORA_DECRYPT_WORKERS=1` does), so a `DecryptionWorkerError`
    that says no worker could start (or that keeps recurring) is followed by a decryption in the cloud's
    process, and the round closes to the mean of its hospitals' deltas. Input: a two-edge Paillier round
    whose sums are decrypted over 2 workers (every sum, however small) on a host where starting a process
    fails with EAGAIN. Observed: each attempt fails with `DecryptionWorkerError: decryption worker processes
    could not start`, is counted, and after `close_max_attempts` the round fails, its honest sums shown
    forwarded and their uploads lost to the model. Now: each of two rounds closes at its first attempt, to
    the mean of its hospitals' deltas, decrypted in the cloud's process, and the fallback is logged once."""
    rng = np.random.default_rng(2204)
    monkeypatch.setattr(paillier_crt, "PARALLEL_MIN", 1)
    monkeypatch.setattr(paillier_crt, "ProcessPoolExecutor", NoProcesses)
    caplog.set_level(logging.WARNING, logger="fedlora.cloud")
    async with running_cloud(decrypt_workers=2, close_retry_s=10.0, close_max_attempts=2) as cloud:
        spec = small_spec(he=PaillierParams(), rounds=2)
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        published = []
        for round_ in (0, 1):
            deltas = fed.deltas(rng)
            for edge_id in ("edge-1", "edge-2"):
                body = await fed.aggregate(cloud, edge_id, round_, deltas[edge_id])
                assert (await fed.post(cloud.http, body)).status_code == 202
            status = await cloud.status(fed.fid, round_)
            # Closed at its first attempt: no worker could start, so the cloud decrypted in its own process.
            assert status.state is RoundState.CLOSED, (status.state, status.failure, status.close_error)
            assert status.close_attempts == 0 and status.close_error is None
            every = {cid: d for edge in deltas.values() for cid, d in edge.items()}
            published.append((await cloud.vector(fed.fid, round_ + 1), await cloud.vector(fed.fid, round_)))
            np.testing.assert_allclose(published[-1][0] - published[-1][1], weighted_mean(every), atol=1e-4)

    said = [r for r in caplog.records if "worker processes cannot start" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
