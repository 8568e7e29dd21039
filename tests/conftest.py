"""Fixtures shared by every test folder: a real `redis-server` for the whole session, and a disk that
loses power (`volatile_disk`)."""

import pytest

from services.store import MemoryStore, RedisStore
from tests.redis_server import RedisServer, issue_tls
from tests.volatile_disk import VolatileDisk, fuse_missing


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory):
    """A redis-server for the session that serves TLS only and asks every client for a certificate, with
    the files of its operator and its service (`fedlora.store_certs`): `(server, InstanceTLS)`."""
    folder = tmp_path_factory.mktemp("tls-redis")
    files = issue_tls(folder / "store")
    server = RedisServer(folder / "data", tls=files.server).start()
    yield server, files
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, emptied: each test starts from no keys."""
    redis_server.flush()
    return redis_server.url


STORE_BACKENDS = ["memory", "redis"]


@pytest.fixture(params=STORE_BACKENDS)
async def state_store(request):
    """The state store the in-process cloud and edge tests run on: each test runs once per backend.

    An async fixture (anyio), so that Redis connections open and close in the test's own event loop.
    """
    if request.param == "memory":
        yield MemoryStore()
        return
    store = RedisStore(request.getfixturevalue("redis_url"))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def volatile_disk(tmp_path):
    """A FUSE disk mounted at `tmp_path/mnt` that drops unsynced writes on `power_cut`; skipped (with the
    reason) only on a machine without /dev/fuse."""
    reason = fuse_missing()
    if reason is not None:
        pytest.skip(reason)
    disk = VolatileDisk(tmp_path / "disk", tmp_path / "mnt").mount()
    yield disk
    disk.unmount()
