"""Adversarial review of issue 21 (TLS, the KEK rotation, the admin CLI, the edge and cloud under concurrent
forwards): each test reproduces one defect found against the promises of docs/operations.md and
docs/privacy.md, as a strict xfail until it is fixed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedlora.cli import app
from tests.cloud.harness import Federation, running_cloud, small_spec
from tests.keks import NEXT_KEK

pytestmark = pytest.mark.anyio


@pytest.mark.xfail(
    strict=True,
    reason="fedlora kek rotate/check open the cloud's Redis without the store's TLS settings "
    "(FEDLORA_STORE_CA_FILE, _CERT_FILE, _KEY_FILE): against the deployed rediss:// Redis they cannot connect",
)
def test_kek_check_reaches_the_clouds_tls_redis_with_the_clouds_own_settings(tls_redis) -> None:
    """`fedlora kek rotate` and `fedlora kek check` read the cloud's own store settings and run where the
    cloud runs (docs/operations.md, "Rotating the KEK"): with the settings the cloud itself reaches its
    TLS-only Redis with (rediss://, the federation's CA, the service's client certificate), `check` reaches
    the same Redis and, with nothing sealed there, exits 0 with its JSON report."""
    server, files = tls_redis
    server.flush()
    env = {
        "FEDLORA_STORE_URL": server.url,
        "FEDLORA_STORE_CA_FILE": str(files.service.ca_file),
        "FEDLORA_STORE_CERT_FILE": str(files.service.cert_file),
        "FEDLORA_STORE_KEY_FILE": str(files.service.key_file),
        "FEDLORA_KEK": NEXT_KEK.hex(),
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, ["kek", "check", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == []


@pytest.mark.xfail(
    strict=True,
    reason="the cloud answers a repeat by idempotency key and main ciphertext digest only: a body with the same "
    "two and another manifest is answered 200 as if it were the sum it holds",
)
async def test_a_body_that_differs_from_the_held_sum_in_its_manifest_is_not_answered_as_a_repeat() -> None:
    """A 200 to a forward the cloud already holds a sum for is only given for the byte-identical sum
    (docs/api.md: the same sum again is taken, counted once; another is 409 `duplicate_upload`). Edge-1's
    second body keeps the held sum's idempotency key and ciphertext but signs another manifest (client-a at
    weight 0.5, fresh nonces): the edge would record hospitals counted at weights the cloud never counted.
    It must be refused with 409 `duplicate_upload`, as a body with another ciphertext is."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(np.random.default_rng(21))["edge-1"]
        held = await fed.aggregate(cloud, "edge-1", 0, deltas)
        assert (await fed.post(cloud.http, held)).status_code == 202
        other = await fed.aggregate(
            cloud,
            "edge-1",
            0,
            deltas,
            ciphertext=held.ciphertext,
            idempotency_key=held.idempotency_key,
            weights={"client-a": 0.5},
        )
        assert other.contributions != held.contributions
        answer = await fed.post(cloud.http, other)
    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "duplicate_upload"
