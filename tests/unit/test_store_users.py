"""`fedlora.store_users`: the tiers' Redis ACL users, their files, and a rotation against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
import ssl
import stat
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedlora.pki import load_authority, new_authority
from fedlora.store_certs import instance_tls, issue_store_certificates
from fedlora.store_users import (
    ADMIN_USER,
    RedisUsers,
    StoreCredentials,
    StoreUsersError,
    StoreUsersSettings,
    issue_store_users,
    run,
)
from services.store import Expiring, RedisStore, open_store
from services.store_tls import StoreTLS
from tests.redis_server import RedisServer, redis_client


def _logs_in(server: RedisServer, name: str, password: str) -> bool:
    client = redis_client(server.port, username=name, password=password)
    try:
        return bool(client.ping())
    except redis.exceptions.AuthenticationError:
        return False
    finally:
        client.close()


def test_passwords_are_owner_only_kept_on_a_second_run_and_new_edges_added(tmp_path: Path) -> None:
    first = issue_store_users(tmp_path, ["edge-1"])
    second = issue_store_users(tmp_path, ["edge-1", "edge-2"])

    assert (second.cloud, second.edges["edge-1"]) == (first.cloud, first.edges["edge-1"])
    assert set(second.edges) == {"edge-1", "edge-2"}
    users = [user for instance in second.instances() for user in (instance.admin, instance.service)]
    for user in users:
        assert stat.S_IMODE(user.password_file.stat().st_mode) == 0o600, user.name
    assert len({user.password for user in users}) == len(users), "a password serves two users"
    for instance in second.instances():
        acl = instance.acl_file.read_text()
        assert all(user.password not in acl for user in users)
        assert acl.splitlines()[0].startswith("user default reset off ")
    assert "~edge:edge-2:* resetchannels -@all +get" in second.edges["edge-2"].acl_file.read_text()


def test_each_redis_instance_knows_only_its_own_tiers_users(tmp_path: Path) -> None:
    """Property: the cloud's Redis and each edge's know their own operator and their own tier's user only,
    each operator with a password of its own, so an edge's site holds no password of another instance."""
    issued = issue_store_users(tmp_path, ["edge-1", "edge-2"])

    def users_of(acl_file: Path) -> list[str]:
        return [line.split()[1] for line in acl_file.read_text().splitlines()]

    assert users_of(issued.cloud.acl_file) == ["default", ADMIN_USER, "fedlora-cloud"]
    for eid, instance in issued.edges.items():
        assert users_of(instance.acl_file) == ["default", ADMIN_USER, f"fedlora-edge-{eid}"]
    files = {instance.acl_file for instance in issued.instances()}
    assert len(files) == 3
    # Each instance's folder holds its own files only: what an edge's site is given.
    folder = issued.edges["edge-1"].folder
    assert {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()} == {
        Path("redis/users.acl"),
        Path("admin/store-password"),
        Path("service/store-password"),
    }


def test_an_edge_id_that_is_not_an_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUsersError, match=r"'edge\*'"):
        issue_store_users(tmp_path, ["edge*"])  # a glob would widen the user's key pattern


def test_settings_take_comma_separated_edge_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLORA_OUT_DIR", str(tmp_path))
    monkeypatch.setenv("FEDLORA_EDGE_IDS", "edge-north,edge-south")
    settings = StoreUsersSettings()  # type: ignore[call-arg]
    assert settings.edge_ids.split(",") == ["edge-north", "edge-south"]


@pytest.mark.parametrize("instance", ["cloud", "edge-1"])
def test_a_rotation_keeps_the_old_password_until_it_is_retired(tmp_path: Path, instance: str) -> None:
    """Property: on each Redis instance, between `rotate` and `retire` both passwords of its tier's user log
    in (after ACL LOAD there), so the service can move to the new one without a moment where its password
    is refused; after `retire` only the new one does."""

    def of(credentials: StoreCredentials) -> RedisUsers:
        return credentials.cloud if instance == "cloud" else credentials.edges[instance]

    before = of(issue_store_users(tmp_path / "users", ["edge-1"]))
    server = RedisServer(tmp_path / "data", acl=before).start()
    try:
        rotated = of(issue_store_users(tmp_path / "users", ["edge-1"], rotate=True))
        admin = redis_client(server.port, username=before.admin.name, password=before.admin.password)
        admin.acl_load()
        name = rotated.service.name
        both = [_logs_in(server, name, p) for p in (before.service.password, rotated.service.password)]
        retired = of(issue_store_users(tmp_path / "users", ["edge-1"], retire=True))
        admin.acl_load()
        admin.close()
        after = [_logs_in(server, name, p) for p in (before.service.password, retired.service.password)]
        server.acl = retired  # stopped as the admin whose password is now the rotated one
    finally:
        server.stop()

    assert rotated.service.previous == before.service.password != rotated.service.password
    assert both == [True, True]
    assert after == [False, True]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_tier_users_transactions_survive_a_restart(tmp_path: Path) -> None:
    """Property: what a tier's user wrote in a MULTI/EXEC is still there after Redis replays its AOF (Redis
    7.0 replays it as the default user, which is off but keeps its grants for that)."""
    users = issue_store_users(tmp_path / "users", ["edge-1"]).cloud
    server = RedisServer(tmp_path / "data", acl=users).start()
    try:
        store = RedisStore(server.url, username=users.service.name, password=users.service.password)
        # Two writes: Redis logs a MULTI/EXEC in the AOF only around more than one command.
        await store.transaction(
            ["cloud:f:a", "cloud:f:b"], lambda current: {"cloud:f:a": Expiring(b"1", 600), "cloud:f:b": b"2"}
        )
        await store.set("cloud:f:lease", b"holder")
        assert await store.expire_if_equals("cloud:f:lease", b"holder", ttl_s=600)  # a script, replayed
        await store.close()
        server.stop()
        server.start()
        store = RedisStore(server.url, username=users.service.name, password=users.service.password)
        kept = [await store.get(key) for key in ("cloud:f:a", "cloud:f:b", "cloud:f:lease")]
        ttl_s = await store.ttl_s("cloud:f:a")
        await store.close()
    finally:
        server.stop()

    assert kept == [b"1", b"2", b"holder"] and ttl_s is not None
    assert "CRITICAL" not in server.log.read_text()


def _tls_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    monkeypatch.setenv("FEDLORA_OUT_DIR", str(tmp_path / "store-users"))
    monkeypatch.setenv("FEDLORA_EDGE_IDS", "edge-north")
    monkeypatch.setenv("FEDLORA_CA_DIR", str(tmp_path / "ca"))
    for name, value in extra.items():
        monkeypatch.setenv(f"FEDLORA_{name.upper()}", value)


def _pem(path: Path) -> bytes:
    return path.read_bytes()


def test_the_step_issues_each_redis_its_certificates_beside_its_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FEDLORA_CA_DIR, each instance gets its Redis's certificate (named for compose's and Kubernetes'
    service, and loopback), its service's and its operator's, all from the one CA; the Redis key is readable
    by the issuer's group (the Redis container's), the others by their owner only. Run again, it keeps them;
    FEDLORA_RENEW_CERTIFICATES issues new ones."""
    _tls_settings(tmp_path, monkeypatch)
    run()
    authority = load_authority(tmp_path / "ca")
    out = tmp_path / "store-users"
    first = {}
    for store, folder in (("cloud", out / "cloud"), ("edge-north", out / "edge-edge-north")):
        files = instance_tls(folder)
        server = x509.load_pem_x509_certificate(_pem(files.server.cert_file))
        server.verify_directly_issued_by(authority.certificate)
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {f"redis-{store}", f"fedlora-redis-{store}", "localhost"} <= set(
            names.get_values_for_type(x509.DNSName)
        )
        assert stat.S_IMODE(files.server.key_file.stat().st_mode) == 0o640
        for client in (files.service, files.admin):
            assert client.cert_file is not None and client.key_file is not None and client.ca_file is not None
            x509.load_pem_x509_certificate(_pem(client.cert_file)).verify_directly_issued_by(
                authority.certificate
            )
            assert stat.S_IMODE(client.key_file.stat().st_mode) == 0o600
            assert _pem(client.ca_file) == authority.certificate_pem
        first[store] = _pem(files.server.cert_file)
    run()
    assert _pem(instance_tls(out / "cloud").server.cert_file) == first["cloud"]
    monkeypatch.setenv("FEDLORA_RENEW_CERTIFICATES", "true")
    run()
    assert _pem(instance_tls(out / "cloud").server.cert_file) != first["cloud"]


def test_a_renewed_certificate_and_a_restart_keep_the_data(tmp_path: Path) -> None:
    """Rotating a Redis certificate: issue it again, restart Redis (it reads its certificate at start-up):
    it presents the new one, and the data written before is all there (the AOF is replayed)."""
    credentials = issue_store_users(tmp_path / "store-users", [])
    authority = new_authority("fedlora test CA")
    instances = {"cloud": (credentials.cloud.folder, credentials.cloud.service.name)}
    files = issue_store_certificates(instances, authority, federation_id="t")["cloud"]
    server = RedisServer(tmp_path / "data", acl=credentials.cloud, tls=files.server).start()
    user = credentials.cloud.service
    before = _presented(server.port, files.service)

    async def write() -> None:
        store = open_store(server.url, username=user.name, password=user.password, tls=files.service)
        try:
            await store.set("cloud:kept", b"before the rotation")
        finally:
            await store.close()

    async def read() -> bytes | None:
        store = open_store(server.url, username=user.name, password=user.password, tls=files.service)
        try:
            return await store.get("cloud:kept")
        finally:
            await store.close()

    asyncio.run(write())
    server.stop()
    issue_store_certificates(instances, authority, federation_id="t", renew=True)
    server.start()
    try:
        after = _presented(server.port, files.service)
        assert asyncio.run(read()) == b"before the rotation"
    finally:
        server.stop()
    assert after.serial_number != before.serial_number
    assert after.public_bytes(serialization.Encoding.PEM) == _pem(files.server.cert_file)


def _presented(port: int, client: StoreTLS) -> x509.Certificate:
    """The certificate the Redis on `port` presents in a TLS handshake (with `client`'s certificate)."""
    context = ssl.create_default_context(cafile=str(client.ca_file))
    context.load_cert_chain(str(client.cert_file), str(client.key_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
