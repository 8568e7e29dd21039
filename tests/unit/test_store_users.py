"""`fedlora.store_users`: the tiers' Redis ACL users, their files, and a rotation against a real redis-server."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis

from fedlora.store_users import (
    ACL_FILE,
    StoreUsersError,
    StoreUsersSettings,
    issue_store_users,
)
from services.store import Expiring, RedisStore
from tests.redis_server import RedisServer


def _logs_in(server: RedisServer, name: str, password: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=server.port, username=name, password=password)
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
    for user in (second.admin, second.cloud, *second.edges.values()):
        assert stat.S_IMODE(user.password_file.stat().st_mode) == 0o600, user.name
    acl = (tmp_path / ACL_FILE).read_text()
    assert all(user.password not in acl for user in (second.admin, second.cloud, *second.edges.values()))
    assert acl.splitlines()[0].startswith("user default reset off ")
    assert "~edge:edge-2:* resetchannels -@all +get" in acl


def test_an_edge_id_that_is_not_an_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUsersError, match=r"'edge\*'"):
        issue_store_users(tmp_path, ["edge*"])  # a glob would widen the user's key pattern


def test_settings_take_comma_separated_edge_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLORA_OUT_DIR", str(tmp_path))
    monkeypatch.setenv("FEDLORA_EDGE_IDS", "edge-north,edge-south")
    settings = StoreUsersSettings()  # type: ignore[call-arg]
    assert settings.edge_ids.split(",") == ["edge-north", "edge-south"]


def test_a_rotation_keeps_the_old_password_until_it_is_retired(tmp_path: Path) -> None:
    """Property: between `rotate` and `retire` both passwords log in (after ACL LOAD), so the services can
    move to the new one without a moment where theirs is refused; after `retire` only the new one does."""
    before = issue_store_users(tmp_path / "users", ["edge-1"])
    server = RedisServer(tmp_path / "data", acl=before).start()
    try:
        rotated = issue_store_users(tmp_path / "users", ["edge-1"], rotate=True)
        admin = redis.Redis(
            host="127.0.0.1", port=server.port, username=before.admin.name, password=before.admin.password
        )
        admin.acl_load()
        both = [
            _logs_in(server, rotated.cloud.name, p) for p in (before.cloud.password, rotated.cloud.password)
        ]
        retired = issue_store_users(tmp_path / "users", ["edge-1"], retire=True)
        admin.acl_load()
        admin.close()
        after = [
            _logs_in(server, retired.cloud.name, p) for p in (before.cloud.password, retired.cloud.password)
        ]
        server.acl = retired  # stopped as the admin whose password is now the rotated one
    finally:
        server.stop()

    assert rotated.cloud.previous == before.cloud.password != rotated.cloud.password
    assert both == [True, True]
    assert after == [False, True]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_tier_users_transactions_survive_a_restart(tmp_path: Path) -> None:
    """Property: what a tier's user wrote in a MULTI/EXEC is still there after Redis replays its AOF (Redis
    7.0 replays it as the default user, which is off but keeps its grants for that)."""
    users = issue_store_users(tmp_path / "users", ["edge-1"])
    server = RedisServer(tmp_path / "data", acl=users).start()
    try:
        store = RedisStore(server.url, username=users.cloud.name, password=users.cloud.password)
        # Two writes: Redis logs a MULTI/EXEC in the AOF only around more than one command.
        await store.transaction(
            ["cloud:f:a", "cloud:f:b"], lambda current: {"cloud:f:a": Expiring(b"1", 600), "cloud:f:b": b"2"}
        )
        await store.set("cloud:f:lease", b"holder")
        assert await store.expire_if_equals("cloud:f:lease", b"holder", ttl_s=600)  # a script, replayed
        await store.close()
        server.stop()
        server.start()
        store = RedisStore(server.url, username=users.cloud.name, password=users.cloud.password)
        kept = [await store.get(key) for key in ("cloud:f:a", "cloud:f:b", "cloud:f:lease")]
        ttl_s = await store.ttl_s("cloud:f:a")
        await store.close()
    finally:
        server.stop()

    assert kept == [b"1", b"2", b"holder"] and ttl_s is not None
    assert "CRITICAL" not in server.log.read_text()
