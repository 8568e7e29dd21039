"""Adversarial review of issue 21's TLS and request limits: each test reproduced a defect the review found
(once a strict xfail, a normal test since the fix). Each docstring states the property the product keeps."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from limits.aio.storage import MemoryStorage

from cloud_server.app import create_app
from fedlora.launcher import free_port
from protocol.crypto import KekRing
from services.limits import RateLimits
from services.store import MemoryStore, RedisStore
from tests.cloud.harness import (
    ADMIN,
    ADMIN_TOKEN,
    KEK,
    Cloud,
    Federation,
    bearer,
    cloud_settings,
    running_cloud,
    small_spec,
)
from tests.redis_server import RedisServer
from tests.served import served

pytestmark = pytest.mark.anyio


def tight_rates(cloud: Cloud, *, per_caller: str, anonymous: str = "1000/minute") -> None:
    """Swap the cloud's rate windows for tight ones once the test's federations are set up (the admin's
    set-up calls would exhaust them otherwise); the middleware reads them from `app.state` per request."""
    cloud.app.state.rate_limits = RateLimits(MemoryStorage(), per_caller=per_caller, anonymous=anonymous)


async def test_a_party_cannot_spend_the_rate_window_of_the_same_id_in_another_federation() -> None:
    """Rate limits keyed by identity are charged to the caller only: `edge-1` of federation `fed-b` using up
    its own window leaves `edge-1` of `fed-a` (another party, another token, another certificate URI)
    inside its window. On main the key is `edge:edge-1` in both, so one federation's edge (or hospital)
    locks the same-named party of every other federation on the cloud out with 429s."""
    async with running_cloud() as cloud:
        fed_a = await Federation.create(cloud.http, small_spec("fed-a"))
        fed_b = await Federation.create(cloud.http, small_spec("fed-b"))
        tight_rates(cloud, per_caller="2/minute")
        b_edge = bearer(fed_b.edges["edge-1"].token)
        spent = [
            (await cloud.http.get("/federations/fed-b/edges", headers=b_edge)).status_code for _ in range(3)
        ]
        victim = await cloud.http.get("/federations/fed-a/edges", headers=bearer(fed_a.edges["edge-1"].token))

    assert spent == [200, 200, 429]  # fed-b's edge-1 is over its own window
    assert victim.status_code == 200, victim.text  # main: 429 "edge:edge-1 is over its rate limit"


async def test_requests_with_refused_tokens_are_counted_against_the_callers_window() -> None:
    """Every request is charged to some window before the service does work for it: one that presents an
    unknown token (401) counts against its client IP's `anonymous_rate_limit`, so a caller cannot try
    tokens (each a store lookup) without limit. On main the 401 is answered before any window is counted:
    50 guesses from one IP over a 5/minute window are all answered 401, never 429."""
    async with running_cloud() as cloud:
        await Federation.create(cloud.http, small_spec("fed-a"))
        tight_rates(cloud, per_caller="5/minute", anonymous="5/minute")
        answers = [
            (
                await cloud.http.get(
                    "/federations/fed-a/edges", headers=bearer(f"guessed-token-{i:04d}-xxxxxxxx")
                )
            ).status_code
            for i in range(50)
        ]

    assert 429 in answers, answers  # main: 50 x 401


def test_a_token_request_while_the_store_is_away_is_503_store_unavailable_as_for_the_admin(
    tmp_path: Path,
) -> None:
    """With the store's Redis away, every request that needs it is answered 503 `store_unavailable` with
    `Retry-After` (a failure worth retrying, docs/api.md), whoever calls: the admin's `GET .../edges` is, but
    an edge's or hospital's (whose token the request limits resolve in the store before the route runs) is a
    500 `internal` on main: the app's store-error answer never sees an exception raised in the middleware."""
    server = RedisServer(tmp_path / "redis").start()

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        store = RedisStore(server.url, reconnect_attempts=1)
        async with running_cloud(store=store) as cloud:
            fed = await Federation.create(cloud.http, small_spec("fed-a"))
            edge = bearer(fed.edges["edge-1"].token)
            server.kill()
            # As a server answers: the app's own answer to an exception, not the exception raised here.
            transport = httpx.ASGITransport(app=cloud.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as http:
                as_admin = await http.get("/federations/fed-a/edges", headers=bearer(ADMIN_TOKEN))
                as_edge = await http.get("/federations/fed-a/edges", headers=edge)
        return as_admin, as_edge

    try:
        as_admin, as_edge = asyncio.run(scenario())
    finally:
        server.stop()

    assert (as_admin.status_code, as_admin.json()["code"]) == (503, "store_unavailable"), as_admin.text
    assert "Retry-After" in as_admin.headers
    # main: 500 `internal`, "internal error (StoreError); see the cloud's log"
    assert (as_edge.status_code, as_edge.json()["code"]) == (503, "store_unavailable"), as_edge.text
    assert "Retry-After" in as_edge.headers


def test_a_long_poll_whose_client_is_gone_frees_its_slot() -> None:
    """A long-poll slot is held by a client that is waiting: once the client's connection closes, the cloud
    stops waiting for it and its slot (`max_long_polls_per_caller`, `max_long_polls`) is free for the next
    poll. On main, under a real uvicorn, the poll goes on for its whole wait (up to `long_poll_s`, 25 s by
    default) with nobody to answer, so a hospital whose connection dropped is refused 429 for that long, and a
    caller that opens and drops polls keeps the service's long-poll cap full for free."""
    long_poll_s = 4.5
    settings = cloud_settings(
        long_poll_s=long_poll_s, max_long_polls_per_caller=1, rate_limit="100000/minute"
    )
    app = create_app(settings, store=MemoryStore(), keks=KekRing(KEK))
    with served(app, free_port()) as url:

        async def hospital_token() -> str:
            async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as admin:
                fed = await Federation.create(admin, small_spec())
                await fed.start(admin)
            return fed.client_tokens["client-a"]

        token = asyncio.run(hospital_token())
        poll = f"/federations/fed-1/plan?after_round=0&wait={long_poll_s:g}"
        with httpx.Client(base_url=url, headers=bearer(token), timeout=30) as http:
            dropped = socket.create_connection(("127.0.0.1", urlsplit(url).port or 0))
            dropped.sendall(
                f"GET {poll} HTTP/1.1\r\nHost: cloud\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
            quick = "/federations/fed-1/plan?after_round=0&wait=0.01"
            # Until the dropped poll holds the caller's one slot (its request is in once this is refused).
            held = next((i for i in range(1000) if http.get(quick).status_code == 429), None)
            assert held is not None, "the first poll never held a long-poll slot"
            dropped.close()
            deadline = time.monotonic() + long_poll_s / 3
            answers: list[int] = []
            while time.monotonic() < deadline and (not answers or answers[-1] == 429):
                answers.append(http.get(quick).status_code)

    assert answers[-1] == 204, answers[-5:]  # main: 429 "client:client-a holds 1 long-polls open" throughout
