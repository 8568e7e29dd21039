"""Review of issue 19 (sealing rounds, adapter bases, per-column noise): each test reproduced a promise the
issue's fix makes that did not hold when the review ran (three of them through an admin's stop, which
failed the open round without sealing it); all four hold now. Run on the memory store and a real Redis
(tests/adversarial/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cloud_server.rounds import RoundService
from protocol.messages import CentralDPConfig, DropReason, LateUploadConfig, PrivacyReport, RoundState
from services import keyspace
from tests.cloud.harness import LAYOUT_SIZE, Federation, one_sum_in, running_cloud, small_spec

pytestmark = pytest.mark.anyio


async def test_an_aggregate_racing_a_stop_is_not_acknowledged_into_the_round_the_stop_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Property: no aggregate answered 202 is left out of the round it was stored in; nothing is stored into
    a round that is being ended (409 `round_closed`/410 instead).

    `POST /federations/{fid}/stop` marks the open round failed in a transaction on the record and the round's
    status only: it neither seals the round nor reads its aggregates. `receive` checks the federation and the
    round before storing, and `_store_once` checks only the seal. An edge's forward whose checks ran before the
    stop and whose store runs after it is answered 202 and stored in a round that is failed, and the failed
    status says the edge did not forward."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        body = await fed.aggregate(cloud, "edge-1", 0, fed.deltas(np.random.default_rng(31))["edge-1"])
        real_check = RoundService._check_mask_correction
        stops = []

        async def stopped_meanwhile(self: RoundService, fid: str, agg) -> None:
            # The admin stops the federation while the forward is being checked (another request, another
            # replica): the round's status becomes failed before the forward's store.
            stops.append(await cloud.http.post(f"/federations/{fid}/stop"))
            await real_check(self, fid, agg)

        monkeypatch.setattr(RoundService, "_check_mask_correction", stopped_meanwhile)
        forward = await fed.post(cloud.http, body)
        assert stops[0].status_code == 200, stops[0].text
        status = await cloud.status(fed.fid, 0)
        stored = await cloud.store.hgetall(keyspace.fed_round_aggregates(fed.fid, 0))

    assert status.state is RoundState.FAILED
    # Either refused, or (if acknowledged) not left out of the round it was stored in.
    assert forward.status_code != 202 and stored == {}, (forward.status_code, sorted(stored), status.edges)


LATE_TOPOLOGY = {
    "edge-1": ("client-a", "client-b", "client-c", "client-d"),
    "edge-2": ("client-e", "client-f"),
}


async def test_a_late_bucket_the_round_leaves_out_is_counted_dropped_with_its_reason() -> None:
    """Property: an update the cloud acknowledged is in the model or in a visible record of why not (issue
    19, item 3); it is never left out silently.

    Round 0 closes with a, b (edge-1) and e, f (edge-2). c (rank 2) and d (rank 1, its cap) upload for round 0
    too late; edge-1 forwards them as a late bucket beside a and b in round 1. `receive` checks the bucket
    (two hospitals, k = 2, both in round 0's plan, which publishes rank 2) and answers 202, claiming c and d
    as counted for round 0. At close, `fold_in` finds that the bucket on its own reaches column 1 with one
    hospital: decrypting it would publish one hospital's column, so it must stay out of the round (which the
    cloud can only know at close: the rule compares the bucket with the round's on-time sum). The review
    found that left out silently (a log line and a metric only); the round's status now counts both uploads
    in `uploads_dropped` as `late_left_out`."""
    rng = np.random.default_rng(41)
    spec = small_spec(rounds=3, late_uploads=LateUploadConfig(max_staleness=2, decay=0.5))
    ranks = {"client-a": 2, "client-b": 2, "client-c": 2, "client-d": 1, "client-e": 2, "client-f": 2}
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, LATE_TOPOLOGY, max_ranks={"client-d": 1})
        plan = await fed.start(cloud.http)
        assert plan.published_rank == 2
        on_time = {"edge-1": ("client-a", "client-b"), "edge-2": ("client-e", "client-f")}
        for edge_id, ids in on_time.items():
            body = await fed.aggregate(
                cloud, edge_id, 0, {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in ids}, ranks=ranks
            )
            assert (await fed.post(cloud.http, body)).status_code == 202
        assert (await cloud.status(fed.fid, 0)).state is RoundState.CLOSED
        late = {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in ("client-c", "client-d")}
        body = await fed.aggregate(
            cloud,
            "edge-1",
            1,
            {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in on_time["edge-1"]},
            ranks=ranks,
            late={0: late},
        )
        forward = await fed.post(cloud.http, body)
        assert forward.status_code == 202, forward.text
        body = await fed.aggregate(
            cloud, "edge-2", 1, {c: rng.normal(0, 0.01, LAYOUT_SIZE) for c in on_time["edge-2"]}, ranks=ranks
        )
        assert (await fed.post(cloud.http, body)).status_code == 202
        status = await cloud.status(fed.fid, 1)
        counted = await cloud.store.get(keyspace.fed_round_counted(fed.fid, 0))

    assert status.state is RoundState.CLOSED
    # c and d are claimed as counted for round 0 (a later bucket naming them is `duplicate_upload`) ...
    assert counted is not None and {"client-c", "client-d"} <= set(json.loads(counted))
    # ... and the two acknowledged late uploads, left out of the round, are counted dropped, with the reason.
    assert status.late_contributions == 0
    assert status.uploads_dropped == {DropReason.LATE_LEFT_OUT: 2}, status.uploads_dropped


async def test_the_sums_a_stopped_round_holds_count_against_the_decrypting_cloud() -> None:
    """Property: privacy accounting holds against the decrypting cloud: every edge sum the cloud holds and can
    decrypt is in the ledger's column against it, released or not (as `fail(held=...)` does for a round that
    fails with sums in hand).

    Distributed Gaussian shares, z = 2, C = 0.5: edge-1 forwards its sum of two hospitals' uploads, each with
    its share (202); the admin stops the federation. The round is marked failed ("federation stopped") by
    `FederationService._transition`, which writes no ledger entry: the cloud keeps edge-1's sum, which it can
    decrypt under two shares (z sqrt(2/4) C), and the privacy report says no round counts against it."""
    z, clip = 2.0, 0.5
    dp = CentralDPConfig(noise_multiplier=z, clip_norm=clip, distributed=True, delta=1e-5)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(central_dp=dp, rounds=3))
        plan = await fed.start(cloud.http)
        assert plan.noise_share is not None
        deltas = fed.deltas(np.random.default_rng(51))
        body = await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"], noise_share_std=plan.noise_share.std)
        assert (await fed.post(cloud.http, body)).status_code == 202
        stop = await cloud.http.post(f"/federations/{fed.fid}/stop")
        assert stop.status_code == 200, stop.text
        assert (await cloud.status(fed.fid, 0)).state is RoundState.FAILED
        held = await cloud.store.hgetall(keyspace.fed_round_aggregates(fed.fid, 0))
        report = PrivacyReport.model_validate_json(
            (await cloud.http.get(f"/federations/{fed.fid}/privacy")).content
        )

    assert sorted(held) == ["edge-1"]  # the cloud keeps the sum it can decrypt
    assert [r.released for r in report.central_rounds] == [False], report.central_rounds


async def test_a_stopped_round_s_status_shows_the_aggregates_it_acknowledged() -> None:
    """Property: an aggregate answered 202 is in the round or in a visible record of why not: the status of
    a round that ends failed names the edges whose sums it holds (`fail` writes `with_progress(status,
    forwarded)`; a round closed or still open shows them too).

    edge-1 forwards (202, the open round's status says `forwarded: True`); the admin stops the federation.
    The failed round still says edge-1 forwarded, and counts the two uploads in its sum as dropped
    (`round_failed`): they reach no model."""
    async with running_cloud() as cloud:
        fed = await one_sum_in(cloud, np.random.default_rng(61))
        before = await cloud.status(fed.fid, 0)
        assert {e.edge_id: e.forwarded for e in before.edges} == {"edge-1": True, "edge-2": False}
        assert (await cloud.http.post(f"/federations/{fed.fid}/stop")).status_code == 200
        after = await cloud.status(fed.fid, 0)
        held = await cloud.store.hgetall(keyspace.fed_round_aggregates(fed.fid, 0))

    assert after.state is RoundState.FAILED and sorted(held) == ["edge-1"]
    assert {e.edge_id: e.forwarded for e in after.edges} == {"edge-1": True, "edge-2": False}, after.edges
    assert after.uploads_dropped == {"round_failed": 2}  # edge-1's two hospitals reach no model
