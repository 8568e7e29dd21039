"""What admins read of past and running rounds: per-edge timings, durations, and the paginated listing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from protocol.messages import LateUploadConfig, RoundState, RoundStatus
from tests.cloud.harness import LAYOUT_SIZE, Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio


async def test_each_edge_reports_when_the_cloud_accepted_its_aggregate_and_a_closed_round_its_duration() -> (
    None
):
    # Prepare: round 0 opens at t0; edge-1 forwards 30 s later, edge-2 another 45 s later (which closes it).
    rng = np.random.default_rng(21)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        t0 = cloud.clock()
        deltas = fed.deltas(rng)

        # Execute
        cloud.clock.advance(30)
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"]))
        ).status_code == 202
        collecting = await cloud.status(fed.fid, 0)
        cloud.clock.advance(45)
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"]))
        ).status_code == 202
        closed = await cloud.status(fed.fid, 0)

    # Assert
    t1, t2 = t0 + timedelta(seconds=30), t0 + timedelta(seconds=75)
    assert collecting.state is RoundState.COLLECTING and collecting.duration_s is None
    assert {e.edge_id: e.forwarded_at for e in collecting.edges} == {"edge-1": t1, "edge-2": None}
    assert closed.state is RoundState.CLOSED and closed.closed_at == t2
    assert {e.edge_id: e.forwarded_at for e in closed.edges} == {"edge-1": t1, "edge-2": t2}
    assert closed.duration_s == 75.0


async def test_the_cloud_counts_the_late_uploads_an_edge_forwarded() -> None:
    # Prepare: client-c and client-d miss round 0; edge-1 carries their bucket with its round-1 sum.
    rng = np.random.default_rng(22)
    topology = {
        "edge-1": ("client-a", "client-b", "client-c", "client-d"),
        "edge-2": ("client-e", "client-f"),
    }
    spec = small_spec(rounds=3, late_uploads=LateUploadConfig(max_staleness=1, decay=0.5))

    def deltas(*ids: str) -> dict[str, np.ndarray]:
        return {cid: rng.normal(0.0, 0.01, LAYOUT_SIZE) for cid in ids}

    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec, topology)
        await fed.start(cloud.http)
        for edge_id, ids in {"edge-1": ("client-a", "client-b"), "edge-2": ("client-e", "client-f")}.items():
            assert (
                await fed.post(cloud.http, await fed.aggregate(cloud, edge_id, 0, deltas(*ids)))
            ).status_code == 202

        # Execute
        with_late = await fed.aggregate(
            cloud, "edge-1", 1, deltas("client-a", "client-b"), late={0: deltas("client-c", "client-d")}
        )
        assert (await fed.post(cloud.http, with_late)).status_code == 202
        status = await cloud.status(fed.fid, 1)

    # Assert
    assert {e.edge_id: (e.uploads_accepted, e.late_accepted) for e in status.edges} == {
        "edge-1": (2, 2),
        "edge-2": (0, 0),
    }


async def test_the_round_listing_is_paginated_with_a_total_count_and_links_to_follow() -> None:
    # Prepare: two rounds fail at their 60 s deadline, so round 2 is open: three rounds in all.
    async with running_cloud() as cloud:
        fed = await Federation.create(
            cloud.http,
            small_spec(rounds=5, round_deadline_s=60.0, upload_deadline_s=30.0, forward_budget_s=20.0),
        )
        await fed.start(cloud.http)
        for _ in range(2):
            cloud.clock.advance(60)
            await cloud.tick()
        url = f"/federations/{fed.fid}/rounds"

        # Execute: the first page, then wherever `rel="next"` points, until it is absent.
        pages = [await cloud.http.get(url, params={"limit": 2})]
        while "next" in pages[-1].links:
            assert len(pages) < 5, "the next links never end"
            pages.append(await cloud.http.get(pages[-1].links["next"]["url"]))
        everything = await cloud.http.get(url, params={"limit": 3})

    # Assert
    assert [p.status_code for p in pages] == [200, 200]
    assert [p.headers["X-Total-Count"] for p in pages] == ["3", "3"]
    assert pages[0].links["next"]["url"] == f"{url}?offset=2&limit=2" and "prev" not in pages[0].links
    assert pages[1].links["prev"]["url"] == f"{url}?offset=0&limit=2"
    rounds = [RoundStatus.model_validate(r) for p in pages for r in p.json()]
    assert [(r.round, r.state) for r in rounds] == [
        (2, RoundState.OPEN),
        (1, RoundState.FAILED),
        (0, RoundState.FAILED),
    ]
    assert [r.duration_s for r in rounds] == [None, 60.0, 60.0]
    assert everything.headers["X-Total-Count"] == "3" and "link" not in everything.headers


async def test_a_round_a_stop_ends_reports_how_long_it_ran() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        cloud.clock.advance(12.5)

        assert (await cloud.http.post(f"/federations/{fed.fid}/stop")).status_code == 200
        status = await cloud.status(fed.fid, 0)

    assert status.state is RoundState.FAILED and status.failure == "federation stopped"
    assert status.duration_s == 12.5


async def test_a_federation_that_has_not_started_lists_no_rounds() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())

        response = await cloud.http.get(f"/federations/{fed.fid}/rounds")

    assert (
        response.json() == [] and response.headers["X-Total-Count"] == "0" and "link" not in response.headers
    )
