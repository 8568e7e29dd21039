"""Review of issue 19 (sealing rounds, adapter bases, per-column noise): each test reproduces a promise the
issue's fix makes that does not hold yet (strict xfail until it does). Run on the memory store and a real
Redis (tests/adversarial/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_server.rounds import RoundService
from protocol.messages import RoundState
from services import keyspace
from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio


@pytest.mark.xfail(
    strict=True,
    reason="stop fails the open round without sealing it: a forward racing it is stored and answered 202",
)
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
