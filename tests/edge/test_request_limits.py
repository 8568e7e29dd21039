"""The edge's request limits (docs/operations.md, "Request limits"): an upload's body limit comes from
the federation's layout and HE scheme, every other route's is small, and a client IP over its window is
answered 429 with `Retry-After`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from edge_aggregator.app import create_app
from tests.edge.harness import FID, World, running_edge

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}


async def test_an_upload_is_limited_by_the_layout_and_a_masking_post_by_a_small_cap(
    make_world: Callable[..., World],
) -> None:
    """A real upload passes; one whose ciphertext is twice the largest this layout's ciphertext can take is
    413 with the limit (above the real upload, well below the old 600 MiB); a masking post of 1 MiB is 413."""
    world = make_world(clients=3)
    world.settings_overrides["max_body_bytes"] = 600 * 1024 * 1024
    real = world.update(world.hospitals["hosp-a"])
    padded = world.update(world.hospitals["hosp-b"], ciphertext=b"\x01" * (2 * len(real.ciphertext) + 65536))
    async with running_edge(world) as edge:
        accepted = await edge.upload(real)
        refused = await edge.upload(padded)
        masking = await edge.http.post(
            f"/federations/{FID}/rounds/0/masking/adverts", content=b" " * (1024 * 1024), headers=JSON
        )

    assert accepted.status_code == 202, accepted.text
    assert (refused.status_code, refused.json()["code"]) == (413, "payload_too_large")
    limit = refused.json()["detail"]["limit"]
    assert len(real.model_dump_json()) < limit < len(padded.model_dump_json())
    assert masking.status_code == 413 and masking.json()["detail"]["limit"] < 1024 * 1024


async def test_a_client_ip_over_its_window_is_answered_429(make_world: Callable[..., World]) -> None:
    """The edge takes no bearer token: its callers are counted per client IP (`anonymous_rate_limit`)."""
    world = make_world(clients=3)
    world.settings_overrides["anonymous_rate_limit"] = "3/minute"
    async with running_edge(world) as edge:
        answers = [await edge.http.get(f"/federations/{FID}/rounds/0") for _ in range(4)]

    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    refused = answers[3]
    assert (refused.status_code, refused.json()["code"]) == (429, "too_many_requests")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_an_upload_to_an_edge_still_starting_is_503_with_retry_after_not_413(
    make_world: Callable[..., World],
) -> None:
    """Until the edge has enrolled it knows no layout to size an upload by. A well-formed upload sent then
    (a restarted edge's hospitals retry at once) must be told to come back (503 + `Retry-After`), not refused
    for good as too large (413, which a hospital does not retry): the load test lost its round that way."""
    world = make_world(clients=3)
    enrolling = asyncio.Event()
    held = asyncio.Event()
    cloud_enrol = world.cloud.enrol

    async def enrol_later(enrolment: Any, key: Any) -> Any:
        enrolling.set()
        await held.wait()
        return await cloud_enrol(enrolment, key)

    world.cloud.enrol = enrol_later
    real = world.update(world.hospitals["hosp-a"])
    app = create_app(world.settings, store=world.store, link=world.cloud, clock=world.clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge-north.test") as http:
            await asyncio.wait_for(enrolling.wait(), timeout=10)
            early = await http.post(
                f"/federations/{FID}/rounds/0/uploads", content=real.model_dump_json(), headers=JSON
            )
            held.set()

    assert early.status_code == 503, early.text
    assert int(early.headers["Retry-After"]) >= 1
