"""Status routes never load ciphertexts: a round's status and the rounds list read the small records
(counts, digests, sizes), never the stored edge sums, however large or corrupt those are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from services import keyspace
from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio

BLOB_BYTES = 8 * 1024 * 1024


def counting(reads: Counter[str], read: Callable[..., Any]) -> Callable[..., Any]:
    async def counted(key: str, *args: Any) -> Any:
        reads[key] += 1
        return await read(key, *args)

    return counted


async def test_round_status_and_rounds_list_never_read_the_stored_sums(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An edge's sum is in, then replaced in the store by 8 MiB of garbage: `GET /rounds/0` and `GET /rounds`
    still answer with the edge's count and bytes, and no read touches the sums' key."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        layout, _ = await cloud.context.federations.layout(fed.fid)
        deltas = {c: np.full(layout.size, 0.01) for c in fed.edges["edge-1"].clients}
        aggregate = await fed.aggregate(cloud, "edge-1", 0, deltas)
        assert (await fed.post(cloud.http, aggregate)).status_code in (200, 202)
        sums = keyspace.fed_round_aggregates(fed.fid, 0)
        await cloud.store.hset(sums, "edge-1", b"\xff" * BLOB_BYTES)
        reads: Counter[str] = Counter()
        for method in ("get", "hget", "hgetall"):
            monkeypatch.setattr(cloud.store, method, counting(reads, getattr(cloud.store, method)))

        status = await cloud.http.get(f"/federations/{fed.fid}/rounds/0")
        listed = await cloud.http.get(f"/federations/{fed.fid}/rounds")

    assert status.status_code == 200 and listed.status_code == 200, (status.text, listed.text)
    assert reads[sums] == 0
    edge = next(e for e in status.json()["edges"] if e["edge_id"] == "edge-1")
    assert edge["forwarded"] and edge["uploads_accepted"] == 2
    assert edge["bytes_received"] == len(aggregate.ciphertext)
    assert status.json()["clients_contributed"] == 2
    assert listed.json()[0]["edges"] == status.json()["edges"]
