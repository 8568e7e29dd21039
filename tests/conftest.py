"""Fixtures shared by every test folder: a real `redis-server` for the whole session."""

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, emptied: each test starts from no keys."""
    redis_server.flush()
    return redis_server.url
