"""The hand-off of checked uploads to the edge's own folder (`edge_aggregator.handoff`): the folder adds an
upload its process stored without reading it back, takes only the ciphertext the manifest names, and holds
a bounded number of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from edge_aggregator.handoff import Handoff
from protocol.crypto import EncryptedVector, HEScheme
from protocol.upload_frame import encode_upload
from tests.edge.harness import LENGTH, POLL_S, Edge, World, running_edge
from tests.metrics_text import metric_value

pytestmark = pytest.mark.anyio
ATOL = 1e-5
PHASE = "fedlora_edge_upload_phase_seconds_count"


async def test_the_edge_folds_what_it_stored_without_reading_it_back(
    make_world: Callable[..., World],
) -> None:
    # Prepare: quorum 1.0 of 3, so the round stays open while two hospitals upload.
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    # Execute: each upload is folded by the edge's own folder before the next is sent.
    async with running_edge(world) as edge:
        counts: dict[str, float | None] = {}
        for n, hospital in enumerate((a, b), start=1):
            assert (await edge.upload_frame(encode_upload(world.update(hospital)))).status_code == 202

            await folded(edge, n)
        text = (await edge.http.get("/metrics")).text
        for phase in ("fold_read", "fold_parse", "fold_add", "validate", "signature"):
            counts[phase] = metric_value(text, PHASE, {"phase": phase})
        summed = await world.stored_sum()

    # Assert: both added, neither read back from the store nor deserialised a second time.
    assert counts == {"fold_read": None, "fold_parse": None, "fold_add": 2, "validate": 2, "signature": 2}
    np.testing.assert_allclose(summed, a.vector + b.vector, atol=ATOL)


async def folded(edge: Edge, uploads: int) -> None:
    """Poll the edge's /metrics until its folder has added `uploads` uploads; fail after `POLL_S`."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + POLL_S
    while (metric_value((await edge.http.get("/metrics")).text, PHASE, {"phase": "fold_add"}) or 0) < uploads:
        if loop.time() > give_up:
            raise AssertionError(f"the edge's folder did not add {uploads} uploads in {POLL_S} s")
        await asyncio.sleep(0.002)


def holding(scheme: HEScheme[Any], clients: Sequence[str]) -> tuple[EncryptedVector[Any], Handoff]:
    """A hand-off of capacity 2 that was given one ciphertext for each of `clients`, its digest the client's
    name."""
    vector = scheme.encrypt(np.zeros(LENGTH))
    handoff = Handoff(capacity=2)
    for client in clients:
        handoff.put(0, 0, client, digest=client, vector=vector)
    return vector, handoff


def test_a_held_ciphertext_is_taken_only_for_the_digest_the_manifest_names(
    client_scheme: HEScheme[Any],
) -> None:
    vector, handoff = holding(client_scheme, ["hosp-a", "hosp-b"])

    other = handoff.take(0, 0, "hosp-a", digest="c" * 64)  # replaced in the store meanwhile
    again = handoff.take(0, 0, "hosp-a", digest="hosp-a")  # taken once, whatever the digest
    held = handoff.take(0, 0, "hosp-b", digest="hosp-b")

    assert (other, again, held) == (None, None, vector)
    assert len(handoff) == 0


def test_the_hand_off_holds_at_most_its_capacity_dropping_the_oldest(client_scheme: HEScheme[Any]) -> None:
    _, handoff = holding(client_scheme, ["hosp-a", "hosp-b", "hosp-c"])

    assert len(handoff) == 2
    assert [handoff.holds(0, 0, c) for c in ("hosp-a", "hosp-b", "hosp-c")] == [False, True, True]
