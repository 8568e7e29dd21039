"""Liveness and readiness: `/readyz` answers 503 `store_unavailable` when the state store is gone."""

from __future__ import annotations

import pytest

from fedlora.launcher import free_port
from services.store import RedisStore
from tests.cloud.harness import post_model, running_cloud, small_spec

pytestmark = pytest.mark.anyio


async def test_ready_when_the_store_answers() -> None:
    async with running_cloud() as cloud:
        assert (await cloud.http.get("/healthz")).json() == {"status": "ok"}
        ready = await cloud.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_not_ready_without_the_store() -> None:
    dead = RedisStore(f"redis://:pw-xyz@127.0.0.1:{free_port()}/0", reconnect_attempts=1)
    try:
        async with running_cloud(store=dead) as cloud:
            assert (await cloud.http.get("/healthz")).status_code == 200  # alive, but not ready
            ready = await cloud.http.get("/readyz")
            created = await post_model(cloud.http, "/federations", small_spec())
    finally:
        await dead.close()
    assert ready.status_code == 503 and ready.json()["code"] == "store_unavailable"
    assert ready.headers["Retry-After"] == "2"
    assert "pw-xyz" not in ready.text
    assert created.status_code == 503 and created.json()["code"] == "store_unavailable"
