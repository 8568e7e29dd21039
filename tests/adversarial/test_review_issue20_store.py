"""Issue 20, item 3: least privilege in the store. Each test reproduced a way one credential (an edge host's
Redis password, a write into the store) reached further than its tier; each holds now.

The Redis tests run a real `redis-server` per tier, each with the ACL file the bootstrap writes for it
(`fedlora.store_users`: the cloud's Redis and each edge's are separate instances); the cloud tests run on the memory store and a real Redis (tests/adversarial/conftest.py)."""

from __future__ import annotations

import contextlib
import inspect
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from client_agent.errors import PinMismatchError
from cloud_server.records import TokenRecord
from fedlora.pki import new_authority
from fedlora.store_certs import InstanceTLS, issue_store_certificates
from fedlora.store_users import StoreCredentials, StoreUser, issue_store_users
from protocol.crypto import CKKSParams, KeyBindingError, generate_scheme, open_secret, seal_secret
from protocol.messages import FederationState, Role, RoundState
from services import keyspace
from services.identity import new_token, token_digest
from services.store import RedisStore, StoreError
from tests.cloud.harness import KEK, Federation, bearer, running_cloud, small_spec
from tests.cloud.test_hospital_policy import EXAMPLES, hospital
from tests.redis_server import RedisServer, redis_client

pytestmark = pytest.mark.anyio

EDGES = ("edge-1", "edge-2")


@dataclass(frozen=True)
class AclRedis:
    """The Redis instances the bootstrap issues users for, each started with its own ACL file: the cloud's
    and one per edge, each knowing its own tier's user only (as deployed: deploy/compose.yaml, deploy/k8s)."""

    credentials: StoreCredentials
    servers: dict[str, RedisServer]  # "cloud" or an edge id -> that tier's Redis
    tls: dict[str, InstanceTLS] | None = None  # served over TLS only: each instance's certificates

    def user(self, tier: str) -> StoreUser:
        return self.credentials.cloud.service if tier == "cloud" else self.credentials.edges[tier].service

    def connect(self, tier: str, *, at: str | None = None, anonymous: bool = False) -> redis.Redis:
        """A client as `tier`'s user (or as nobody), at its own Redis or at the Redis of tier `at`, over TLS
        with `tier`'s service certificate when the servers serve TLS."""
        user, server = self.user(tier), self.servers[at or tier]
        login = {} if anonymous else {"username": user.name, "password": user.password}
        tls = self.tls[tier].service.redis_options() | {"ssl": True} if self.tls is not None else {}
        return redis_client(server.port, **login, **tls)


@contextlib.contextmanager
def started_acl_redis(folder: Path, *, tls: bool = False) -> Iterator[AclRedis]:
    """A redis-server of its own for the cloud and for each of `EDGES`, with the ACL files `fedlora.store_users`
    issues (and with `tls` serving TLS only, with the certificates `fedlora.store_certs` issues beside them);
    stopped on exit."""
    credentials = issue_store_users(folder / "store-users", EDGES)
    instances = {"cloud": credentials.cloud} | credentials.edges
    certificates = (
        issue_store_certificates(
            {tier: (users.folder, users.service.name) for tier, users in instances.items()},
            new_authority("fedlora test CA"),
            federation_id="test",
        )
        if tls
        else None
    )
    servers: dict[str, RedisServer] = {}
    try:
        for tier, users in instances.items():
            server_tls = certificates[tier].server if certificates is not None else None
            servers[tier] = RedisServer(folder / f"data-{tier}", acl=users, tls=server_tls).start()
        yield AclRedis(credentials, servers, certificates)
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    with started_acl_redis(tmp_path_factory.mktemp("acl-redis")) as started:
        yield started


# -- Redis users --------------------------------------------------------------------------------------------
def test_an_edge_user_cannot_write_an_admin_token_record_into_the_clouds_keys(acl_redis) -> None:
    """Property: an edge's Redis user reads and writes its own `edge:{eid}:` keys only: no `cloud:` key (a
    token record with the admin role, the HE public key) and no other edge's key."""
    edge = acl_redis.connect("edge-1")
    forged = json.dumps({"role": "admin", "subject": "edge-1"})
    try:
        edge.set("edge:edge-1:fed-1:api-token", b"mine")
        assert edge.get("edge:edge-1:fed-1:api-token") == b"mine"
        for attempt in (
            lambda: edge.hset(keyspace.fed_tokens("fed-1"), token_digest(new_token()), forged),
            lambda: edge.set(keyspace.fed_public("fed-1"), b"another key"),
            lambda: edge.get(keyspace.fed_secret("fed-1")),
            lambda: edge.get("edge:edge-2:fed-1:api-token"),
            lambda: edge.set("edge:edge-2:fed-1:round:0:sum", b"x"),
            lambda: edge.flushall(),
            lambda: edge.config_get("*"),
            lambda: edge.keys("*"),
            lambda: edge.acl_list(),
            lambda: edge.publish("cloud:fed-1", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
    finally:
        edge.close()


@pytest.fixture(scope="module")
def acl_redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    with started_acl_redis(tmp_path_factory.mktemp("acl-redis-tls"), tls=True) as started:
        yield started


@pytest.mark.parametrize("transport", ["acl_redis", "acl_redis_tls"])
def test_the_cloud_user_touches_no_edge_key_and_the_default_user_is_off(request, transport) -> None:
    """The ACL users confine each tier on plain Redis and on Redis over TLS alike: a client certificate of
    the federation's CA reaches the server, never past its user's keys."""
    acl_redis = request.getfixturevalue(transport)
    cloud = acl_redis.connect("cloud")
    anonymous = acl_redis.connect("cloud", anonymous=True)
    try:
        cloud.set(keyspace.fed_spec("fed-1"), b"{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            cloud.get("edge:edge-1:fed-1:api-token")
        with pytest.raises(redis.exceptions.NoPermissionError):
            cloud.flushdb()
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
    finally:
        cloud.close()
        anonymous.close()


@pytest.mark.parametrize(("tier", "prefix"), [("cloud", "cloud:"), ("edge-2", "edge:edge-2:")])
async def test_each_tier_user_runs_every_store_operation_on_its_own_keys(acl_redis, tier, prefix) -> None:
    """Property: the commands a tier's user may run are every one `RedisStore` sends for that tier (a
    transaction, SCAN, TIME, INFO memory; the cloud's compare-and-delete script, which an edge's user may not
    run), so a service runs on its user."""
    prefix += f"{secrets.token_hex(4)}:"  # a federation of its own: this test runs once per state store
    user = acl_redis.user(tier)
    store = RedisStore(acl_redis.servers[tier].url, username=user.name, password=user.password)
    try:
        assert await store.ping()
        await store.set(prefix + "a", b"1", ttl_s=60)
        assert await store.set_if_absent(prefix + "b", b"2")
        assert await store.incr(prefix + "n") == 1
        await store.hset(prefix + "h", "f", b"v")
        assert await store.hset_if_absent(prefix + "h", "g", b"w")
        assert await store.hgetall(prefix + "h") == {"f": b"v", "g": b"w"}
        await store.transaction([prefix + "a"], lambda current: {prefix + "a": b"3"})
        await store.fields_transaction(
            [(prefix + "h", "f")], lambda fields, keys: ({(prefix + "h", "f"): None}, {})
        )
        assert await store.hset_if_absent_with(prefix + "h2", "f", b"v", keys=[prefix + "b"], fn=lambda c: {})
        if tier == "cloud":  # the closer's lease: the only scripts, and only the cloud's user may run them
            assert await store.expire_if_equals(prefix + "a", b"3", ttl_s=30)
            assert await store.delete_if_equals(prefix + "a", b"3")
        else:
            with pytest.raises(StoreError, match=r"(?i)noperm|permission"):
                await store.delete_if_equals(prefix + "a", b"3")
            await store.delete(prefix + "a")
        assert await store.expire([prefix + "b"], ttl_s=30) == 1
        assert (await store.ttl_s(prefix + "b") or 0) > 0
        assert await store.scan(prefix) == sorted(prefix + k for k in ("b", "h", "h2", "n"))
        await store.time()
        assert (await store.memory_use()).used_bytes > 0
        assert await store.delete(prefix + "b", prefix + "h", prefix + "h2", prefix + "n") == 4
    finally:
        await store.close()


def test_every_key_of_a_tier_lies_under_the_prefix_its_user_is_confined_to() -> None:
    """Property: each `services.keyspace` function of the cloud gives a key under `cloud:`, each of an edge
    one under `edge:{eid}:`, so that the tiers' ACL users (confined to these) can run their services."""
    for name, key_of in inspect.getmembers(keyspace, inspect.isfunction):
        arity = len(inspect.signature(key_of).parameters)
        if name.startswith("fed"):
            assert key_of(*["x"] * arity).startswith(keyspace.CLOUD_PREFIX), name
        elif name.startswith("edge_") and name != "edge_prefix":
            assert key_of("e1", *["x"] * (arity - 1)).startswith(keyspace.edge_prefix("e1")), name


# -- token records ------------------------------------------------------------------------------------------
def test_a_token_record_cannot_carry_the_admin_role() -> None:
    with pytest.raises(ValidationError, match="admin"):
        TokenRecord(role=Role.ADMIN, subject="edge-1")


async def test_an_admin_role_token_record_written_into_the_store_does_not_authorise() -> None:
    """Property: admin calls are authorised by the admin credential of the settings only; a token record
    with the admin role (written by whoever can write the store) authorises nothing."""
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(), topology={})
        token = new_token()
        digest = token_digest(token)
        await cloud.store.hset(
            keyspace.fed_tokens(fed.fid), digest, json.dumps({"role": "admin", "subject": "admin"}).encode()
        )
        await cloud.store.set(keyspace.fed_subject_token(fed.fid, "admin", "admin"), digest.encode())
        response = await cloud.http.get(f"/federations/{fed.fid}/adapters", headers=bearer(token))

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"


# -- sealed secrets -----------------------------------------------------------------------------------------
def test_a_sealed_secret_opened_under_another_federation_id_fails() -> None:
    scheme = generate_scheme(CKKSParams())
    sealed = seal_secret(scheme, KEK, federation_id="fed-a")

    opened = open_secret(scheme.params, sealed, KEK, federation_id="fed-a", fingerprint=scheme.fingerprint)
    with pytest.raises(KeyBindingError, match="fed-b"):
        open_secret(scheme.params, sealed, KEK, federation_id="fed-b", fingerprint=scheme.fingerprint)
    other = generate_scheme(CKKSParams())
    with pytest.raises(KeyBindingError, match="fingerprint"):
        open_secret(scheme.params, sealed, KEK, federation_id="fed-a", fingerprint=other.fingerprint)

    assert opened.fingerprint == scheme.fingerprint


async def test_a_swapped_public_key_fails_the_round_with_a_reason_instead_of_decrypting() -> None:
    """Property: the cloud opens the HE secret only beside the public key it was sealed with; a public key
    swapped in the store fails the round (and stops the federation) with a reason, no retry loop."""
    rng = np.random.default_rng(20)
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        await fed.start(cloud.http)
        deltas = fed.deltas(rng)
        first = await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 0, deltas["edge-1"]))
        assert first.status_code == 202, first.text
        other = generate_scheme(CKKSParams())
        await cloud.store.set(keyspace.fed_public(fed.fid), other.public_bytes())
        second = await fed.post(cloud.http, await fed.aggregate(cloud, "edge-2", 0, deltas["edge-2"]))
        status = await cloud.status(fed.fid, 0)
        info = await cloud.context.federations.info(fed.fid)

    assert second.status_code == 202, second.text
    assert status.state is RoundState.FAILED
    assert status.failure is not None and "fingerprint" in status.failure
    assert info.state is FederationState.STOPPED


# -- hospitals ----------------------------------------------------------------------------------------------
async def test_a_hospital_refuses_a_he_key_other_than_the_one_it_was_given(tmp_path: Path) -> None:
    """Property: a hospital given the federation's HE key fingerprint out of band (the bootstrap writes it
    beside its enrolment token) refuses a federation whose key was swapped in the store, record included,
    before its first contact: it never encrypts under that key."""
    async with hospital(tmp_path, small_spec()) as site:
        real = site.fed.created.he_fingerprint
    async with hospital(tmp_path / "given", small_spec(), he_fingerprint=real) as site:
        other = generate_scheme(CKKSParams())
        fid = site.fed.fid
        await site.cloud.store.set(keyspace.fed_public(fid), other.public_bytes())
        record = json.loads(await site.cloud.store.get(keyspace.fed_state(fid)) or b"{}")
        record["he_fingerprint"] = other.fingerprint.hex()
        await site.cloud.store.set(keyspace.fed_state(fid), json.dumps(record).encode())
        await site.agent.enrol(site.peer, EXAMPLES)
        with pytest.raises(PinMismatchError) as refused:
            await site.agent.federation(site.peer, EXAMPLES)

    assert (refused.value.field, refused.value.limit) == ("he_fingerprint", real)
    assert site.agent.state.federation_fingerprint is None


# -- edges --------------------------------------------------------------------------------------------------
async def test_an_edge_lists_only_its_own_hospitals() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        as_edge_1 = bearer(fed.edges["edge-1"].token)
        other = await cloud.http.get(f"/federations/{fed.fid}/clients?edge_id=edge-2", headers=as_edge_1)
        own = await cloud.http.get(f"/federations/{fed.fid}/clients?edge_id=edge-1", headers=as_edge_1)
        unnamed = await cloud.http.get(f"/federations/{fed.fid}/clients", headers=as_edge_1)
        keys = await cloud.http.get(f"/federations/{fed.fid}/identity-keys?edge_id=edge-2", headers=as_edge_1)

    assert (other.status_code, other.json()["code"]) == (403, "forbidden")
    assert own.status_code == 200 and {c["client_id"] for c in own.json()} == {"client-a", "client-b"}
    assert unnamed.status_code == 200 and {c["client_id"] for c in unnamed.json()} == {"client-a", "client-b"}
    assert (keys.status_code, keys.json()["code"]) == (403, "forbidden")


async def test_an_edge_receives_no_adapter_vector_nor_basis() -> None:
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec())
        as_edge = bearer(fed.edges["edge-1"].token)
        vector = await cloud.http.get(f"/federations/{fed.fid}/adapters/0/vector", headers=as_edge)
        basis = await cloud.http.get(f"/federations/{fed.fid}/basis/0", headers=as_edge)
        as_client = bearer(fed.client_tokens["client-a"])
        for_client = await cloud.http.get(f"/federations/{fed.fid}/adapters/0/vector", headers=as_client)

    assert (vector.status_code, vector.json()["code"]) == (403, "forbidden")
    assert (basis.status_code, basis.json()["code"]) == (403, "forbidden")
    assert for_client.status_code == 200
