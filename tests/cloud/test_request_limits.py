"""The cloud's request limits (docs/operations.md, "Request limits"): who calls is known before a byte of
the body is read, each route's body limit comes from what it carries, and callers over their rate,
concurrency or long-poll caps are answered 429 with `Retry-After`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from services.limits import InFlight, RequestLimits
from tests.cloud.harness import Cloud, Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024


class CountingBody:
    """A chunked request body that counts the chunks the server pulled."""

    def __init__(self, chunks: int, chunk: bytes = b"{" * CHUNK) -> None:
        self.chunks = chunks
        self.chunk = chunk
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def started(cloud: Cloud) -> Federation:
    fed = await Federation.create(cloud.http, small_spec())
    await fed.start(cloud.http)
    return fed


async def test_a_bad_token_is_refused_before_the_body_is_read_or_parsed() -> None:
    """A missing or wrong bearer token is 401 whatever the body: a huge streamed one is never pulled, an
    announced one over any limit is not 413, a malformed one is not 422."""
    async with running_cloud() as cloud:
        fed = await started(cloud)
        url = f"/federations/{fed.fid}/rounds/0/aggregates"
        huge = CountingBody(chunks=64)
        streamed = await cloud.http.post(url, content=huge, headers=bearer("not-a-token-of-anyone-0123"))
        announced = await cloud.http.post(
            url,
            content=b"x" * (256 * 1024),
            headers={"Content-Type": "application/json", "Authorization": ""},
        )
        malformed = await cloud.http.post(
            "/federations", content=b"{not json", headers=bearer("not-a-token-of-anyone-0123")
        )

    assert huge.pulled <= 1  # the transport may prime one chunk; the app reads none
    for refused in (streamed, announced, malformed):
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "unauthenticated"
        assert refused.headers["WWW-Authenticate"] == "Bearer"


async def test_an_upload_route_is_limited_by_the_federations_layout_and_a_json_route_by_a_small_cap() -> None:
    """The aggregate route takes the federation's largest well-formed sum and no more; a JSON route takes
    `max_json_body_bytes`; both refuse from Content-Length (and while a chunked body streams) with the limit
    in `detail`."""
    async with running_cloud() as cloud:
        fed = await started(cloud)
        layout, _ = await cloud.context.federations.layout(fed.fid)
        edge = fed.edges["edge-1"]
        deltas = {c: np.full(layout.size, 0.01) for c in edge.clients}
        real = await fed.aggregate(cloud, "edge-1", 0, deltas)
        real_bytes = len(real.model_dump_json())
        url = f"/federations/{fed.fid}/rounds/0/aggregates"
        announced = bearer(edge.token) | {"Content-Length": str(600 * 1024 * 1024)}
        probe = await cloud.http.post(url, content=CountingBody(chunks=1), headers=announced)
        assert probe.status_code == 413 and probe.json()["code"] == "payload_too_large", probe.text
        limit = probe.json()["detail"]["limit"]
        # The sum's ciphertext at its largest, in base64, and a manifest line per hospital the federation
        # may hold: above a real aggregate, far below the old 600 MiB on every route.
        assert real_bytes < limit < 64 * 1024 * 1024
        over = bearer(edge.token) | {"Content-Length": str(limit + 1)}
        just_over = await cloud.http.post(url, content=CountingBody(chunks=1), headers=over)
        assert just_over.status_code == 413 and just_over.json()["detail"] == {"limit": limit}
        accepted = await fed.post(cloud.http, real)
        assert accepted.status_code in (200, 202), accepted.text

        json_route = await cloud.http.post(
            "/federations", content=b" " * (65 * 1024), headers={"Content-Type": "application/json"}
        )
        streamed = await cloud.http.post(
            "/federations", content=CountingBody(chunks=4), headers={"Content-Type": "application/json"}
        )
    assert json_route.status_code == 413 and json_route.json()["detail"] == {"limit": 64 * 1024}
    assert streamed.status_code == 413 and streamed.json()["detail"] == {"limit": 64 * 1024}


async def test_a_caller_over_its_rate_limit_is_answered_429_with_retry_after_and_others_are_not() -> None:
    """Windows are per caller: the admin over `rate_limit` is refused while the routes without a token,
    counted per client IP (`anonymous_rate_limit`), still pass; one IP over its window leaves another's."""
    async with running_cloud(rate_limit="3/minute", anonymous_rate_limit="2/minute") as cloud:
        answers = [await cloud.http.get("/federations") for _ in range(4)]
        health = [await cloud.http.get("/healthz") for _ in range(3)]
        elsewhere = httpx.ASGITransport(app=cloud.app, client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=elsewhere, base_url="http://cloud") as other:
            other_health = await other.get("/healthz")

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["detail"]["retry_after_s"] == int(refused.headers["Retry-After"])
    assert refused.json()["detail"]["limit"] == "3 per 1 minute"
    assert [h.status_code for h in health] == [200, 200, 429]
    assert other_health.status_code == 200


def in_flight(app: FastAPI) -> InFlight:
    """The requests and long-polls the app's request limits count in progress."""
    node = app.middleware_stack
    while not isinstance(node, RequestLimits):
        node = node.app  # type: ignore[union-attr]
    return node.in_flight


async def until_held(app: FastAPI, counter: str, caller: str, *, polls: int = 500) -> None:
    """Poll (bounded) until `caller` holds one of `counter` (`requests`, `long_polls`) open: its token is
    resolved in the store first, a round trip to Redis."""
    for _ in range(polls):
        if getattr(in_flight(app), counter)[caller] >= 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{caller} holds no {counter} after {polls} polls")


async def test_open_long_polls_are_capped_per_caller_and_per_service() -> None:
    """A caller holding `max_long_polls_per_caller` plan polls open gets 429 for another; once the service
    holds `max_long_polls`, another caller's poll is refused too; a request that does not wait still passes."""
    async with running_cloud(max_long_polls_per_caller=1, max_long_polls=2, long_poll_s=2.0) as cloud:
        fed = await started(cloud)
        one, two = (fed.edges[e].token for e in ("edge-1", "edge-2"))
        plan = f"/federations/{fed.fid}/plan?after_round=0&wait=5"
        first = asyncio.create_task(cloud.http.get(plan, headers=bearer(one)))
        await until_held(cloud.app, "long_polls", f"edge:{fed.fid}/edge-1")
        again = await cloud.http.get(plan, headers=bearer(one))
        second = asyncio.create_task(cloud.http.get(plan, headers=bearer(two)))
        await until_held(cloud.app, "long_polls", f"edge:{fed.fid}/edge-2")
        admin = await cloud.http.get(plan)
        short = await cloud.http.get(f"/federations/{fed.fid}/plan?after_round=-1")
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)

    assert again.status_code == 429 and again.json()["detail"]["max_long_polls_per_caller"] == 1
    assert admin.status_code == 429 and admin.json()["detail"]["max_long_polls"] == 2
    assert again.headers["Retry-After"] == admin.headers["Retry-After"] == "1"
    assert short.status_code == 200


async def test_a_caller_over_its_concurrency_cap_is_refused_429() -> None:
    """`max_concurrent_per_caller` requests of one caller in progress: the next is refused until one ends."""
    async with running_cloud(max_concurrent_per_caller=1, long_poll_s=2.0) as cloud:
        fed = await started(cloud)
        token = fed.edges["edge-1"].token
        held = asyncio.create_task(
            cloud.http.get(f"/federations/{fed.fid}/plan?after_round=0&wait=5", headers=bearer(token))
        )
        await until_held(cloud.app, "requests", f"edge:{fed.fid}/edge-1")
        refused = await cloud.http.get(f"/federations/{fed.fid}", headers=bearer(token))
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        after = await cloud.http.get(f"/federations/{fed.fid}", headers=bearer(token))

    assert refused.status_code == 429 and refused.json()["code"] == "too_many_requests"
    assert refused.json()["detail"]["max_concurrent_per_caller"] == 1
    assert refused.headers["Retry-After"] == "1"
    assert after.status_code == 200
