"""Adversarial review of issue 21's TLS and request limits: each strict xfail reproduces an open defect (it
passes while the defect exists; whoever fixes it removes the marker). Each docstring states the property the
product breaks."""

from __future__ import annotations

import pytest
from limits.aio.storage import MemoryStorage

from services.limits import RateLimits
from tests.cloud.harness import Cloud, Federation, bearer, running_cloud, small_spec

pytestmark = pytest.mark.anyio


def tight_rates(cloud: Cloud, *, per_caller: str, anonymous: str = "1000/minute") -> None:
    """Swap the cloud's rate windows for tight ones once the test's federations are set up (the admin's
    set-up calls would exhaust them otherwise); the middleware reads them from `app.state` per request."""
    cloud.app.state.rate_limits = RateLimits(MemoryStorage(), per_caller=per_caller, anonymous=anonymous)


@pytest.mark.xfail(
    strict=True,
    reason="services.limits: the caller key is `<role>:<subject>` without the federation, so two federations' "
    "parties of the same id share one rate window (and one concurrency and long-poll count)",
)
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
        spent = [(await cloud.http.get("/federations/fed-b/edges", headers=b_edge)).status_code for _ in range(3)]
        victim = await cloud.http.get("/federations/fed-a/edges", headers=bearer(fed_a.edges["edge-1"].token))

    assert spent == [200, 200, 429]  # fed-b's edge-1 is over its own window
    assert victim.status_code == 200, victim.text  # main: 429 "edge:edge-1 is over its rate limit"


@pytest.mark.xfail(
    strict=True,
    reason="services.limits: a request whose bearer token is refused (401) is counted in no rate window",
)
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
                await cloud.http.get("/federations/fed-a/edges", headers=bearer(f"guessed-token-{i:04d}-xxxxxxxx"))
            ).status_code
            for i in range(50)
        ]

    assert 429 in answers, answers  # main: 50 x 401
