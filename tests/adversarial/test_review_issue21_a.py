"""Adversarial review of issue 21 (TLS, the KEK rotation, the admin CLI, the edge and cloud under concurrent
forwards): each test reproduces one defect found against the promises of docs/operations.md and
docs/privacy.md, as a strict xfail until it is fixed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from typer.testing import CliRunner

from cloud_server.retention import Retention, RetentionPolicy
from fedlora.cli import app
from fedlora.kek_rotation import RecordState, rotate
from fedlora.store_certs import InstanceTLS
from protocol.aggregation import RoundNoise
from protocol.crypto import KekRing, KeyStoreError, open_bytes, open_secret, scheme_from_public, seal_bytes
from protocol.messages import NoiseMechanism
from services import keyspace
from services.store import MemoryStore, RedisStore
from tests.adversarial.test_store_tls import _refusal
from tests.cloud.harness import Federation, running_cloud, small_spec
from tests.hostile_http import Answer, answering_server  # noqa: F401
from tests.keks import KEK, NEXT_KEK
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def test_kek_check_reaches_the_clouds_tls_redis_with_the_clouds_own_settings(
    tls_redis: tuple[RedisServer, InstanceTLS],
) -> None:
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


def test_a_rotation_keeps_the_expiry_retention_gave_a_sealed_noise(redis_url: str) -> None:
    """Re-sealing changes how a record is sealed, nothing else (docs/operations.md, "Rotating the KEK"; the
    retention window of docs/privacy.md): a failed round keeps its sealed central noise until retention's
    window ends (`Retention.round_ended` gives it a TTL), and after `fedlora kek rotate` re-sealed it under
    the new KEK it must still expire then, not stay in the store for good."""
    noise_key = keyspace.fed_round_noise("fed-1", 0)

    async def scenario() -> tuple[float | None, float | None]:
        store = RedisStore(redis_url)
        try:
            await store.hset(keyspace.federations(), "fed-1", b"2026-12-06T00:00:00+00:00")
            await store.set(noise_key, seal_bytes(b"tag\nnoise", KEK, label=noise_key.encode()))
            await Retention(store, RetentionPolicy(round_s=3600.0, versions=2)).round_ended(
                "fed-1", 0, adapter_version=0
            )
            before = await store.ttl_s(noise_key)
            report = await rotate(store, KekRing(current=NEXT_KEK, previous=KEK), write=True)
            resealed = [r.key for r in report.records if r.state is RecordState.RESEALED]
            assert resealed == [noise_key], report
            assert open_bytes(await store.get(noise_key) or b"", NEXT_KEK, label=noise_key.encode())
            return before, await store.ttl_s(noise_key)
        finally:
            await store.close()

    before, after = asyncio.run(scenario())
    assert before is not None and before > 3000
    assert after is not None and after > 3000, f"the re-sealed noise has no expiry any more (TTL {after})"


@pytest.fixture
def hostile_cloud(answering_server: Callable[[Answer], str]) -> Callable[[int, bytes], str]:  # noqa: F811
    """A compromised cloud on loopback: every GET is answered with the status and body given; the URL."""

    def serve(status: int, body: bytes) -> str:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            handler.wfile.write(head.encode() + body)

        return answering_server(answer)

    return serve


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"[{}]"])
def test_an_answer_that_is_not_the_apis_model_is_a_refusal_not_a_traceback(
    hostile_cloud: Callable[[int, bytes], str], body: bytes
) -> None:
    """A malicious or broken cloud (or a proxy in front of it) cannot make `fedlora admin` trace back: a
    200 whose body is not the API's model is reported as a one-line refusal on stderr, with a non-zero
    exit status and nothing on stdout (docs/operations.md, "Daily administration"), for `--json` scripts too,
    and the admin token appears nowhere in what it prints."""
    url = hostile_cloud(200, body)
    token = "admin-token-never-printed"
    result = CliRunner().invoke(app, ["admin", "--cloud", url, "--token", token, "federations", "--json"])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == "" and token not in result.output


async def unlist(store: MemoryStore, fid: str) -> None:
    """What a create cut between its keys and its listing left behind, in a store a cloud wrote before
    create listed a federation in the same transaction as its keys: the keys, no `cloud:federations` field."""
    field = (keyspace.federations(), fid)
    await store.fields_transaction([field], lambda fields, keys: ({field: None}, {}))


def test_after_rotate_and_check_pass_every_sealed_secret_opens_under_the_new_kek_alone() -> None:
    """After `fedlora kek rotate` and `fedlora kek check` pass, the new KEK alone opens every sealed record
    of every federation in the store (docs/operations.md, "Rotating the KEK": FEDLORA_KEK_PREVIOUS can then
    be unset). A federation whose create was cut by a store outage after its keys were written (answered
    503 by a cloud that listed it in a second write; its spec, public key and sealed secret are in the store
    and the cloud serves it by id) is one of them."""

    async def scenario() -> None:
        store = MemoryStore()
        spec = small_spec("fed-cut")
        async with running_cloud(store=store, kek=KEK) as cloud:
            created = await cloud.http.post("/federations", json=spec.model_dump(mode="json"))
            assert created.status_code == 201, created.text
        await unlist(store, "fed-cut")
        assert await store.hgetall(keyspace.federations()) == {}
        rotated = await rotate(store, KekRing(current=NEXT_KEK, previous=KEK), write=True)
        checked = await rotate(store, KekRing(current=NEXT_KEK), write=False)
        assert rotated.count(RecordState.UNREADABLE) == 0 and checked.complete, checked
        sealed = await store.get(keyspace.fed_secret("fed-cut"))
        public = await store.get(keyspace.fed_public("fed-cut"))
        assert sealed is not None and public is not None
        fingerprint = scheme_from_public(spec.he, public).fingerprint
        open_secret(spec.he, sealed, NEXT_KEK, federation_id="fed-cut", fingerprint=fingerprint)

    asyncio.run(scenario())


async def test_during_the_roll_a_replica_on_the_old_kek_keeps_the_noise_a_new_replica_drew() -> None:
    """During a KEK roll, replicas on the old KEK, on both, and on the new one with the old as previous run
    side by side (docs/operations.md, "Rotating the KEK", steps 2-3), and a round's central noise is drawn
    once and every closer of the round adds the same (`FederationService.central_noise`). A replica already
    on the new KEK draws round 0's noise (sealed under the new KEK); a replica not yet rolled must then not
    take that record for a corrupt one, delete it and add other noise: it backs off (`KeyStoreError`) or
    adds the same."""
    noise = RoundNoise(NoiseMechanism.GAUSSIAN, 1.0, 1.0, False, 0.0, 1.0)
    async with running_cloud(kek=KEK) as old:
        fed = await Federation.create(old.http, small_spec())
        key = keyspace.fed_round_noise(fed.fid, 0)
        async with running_cloud(store=old.store, kek=NEXT_KEK, kek_previous=KEK) as rolled:
            drawn = await rolled.context.federations.central_noise(fed.fid, 0, noise, fed.spec.he, size=64)
        sealed = await old.store.get(key)
        try:
            added = await old.context.federations.central_noise(fed.fid, 0, noise, fed.spec.he, size=64)
        except KeyStoreError:
            added = drawn  # backing off until the replica is rolled is what it may do
        kept = await old.store.get(key)
    assert drawn is not None and added is not None
    assert kept == sealed, "the new replica's sealed noise was replaced"
    np.testing.assert_array_equal(added, drawn)


def test_a_store_password_given_in_the_url_query_is_never_printed() -> None:
    """Nothing prints the store's password (services/settings.py `describe`, the cloud's `/readyz`: "the
    store's address, never its password"). redis-py takes the password from the URL's query as well as from
    its user part (`redis://host:port/0?password=...` logs in), so a password there must be masked in the
    store's description and in the error a refused connection raises, as one in the user part is."""
    password = "hunter2-in-the-query"
    url = f"redis://127.0.0.1:1/0?password={password}"
    described = RedisStore(url).describe()
    message = _refusal(url, None)
    assert password not in described, described
    assert password not in message, message
