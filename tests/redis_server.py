"""A real `redis-server` for the tests: the services' own `RedisProcess` on a free loopback port in a
temporary folder, with every write fsync'ed before Redis answers (`appendfsync always`).

Nothing here fakes Redis. `make test` installs Debian's `redis-server` when it is missing; run by hand,
`pytest` fails with a message that says so.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Literal, Self

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fedlora.launcher import free_port
from fedlora.pki import Authority, new_authority
from fedlora.redis_process import START_TIMEOUT_S, RedisMissingError, RedisProcess
from fedlora.redis_process import redis_binary as find_redis_binary
from fedlora.store_certs import InstanceTLS, ServerTLS, issue_store_certificates
from fedlora.store_users import CLOUD_USER, RedisUsers


def redis_binary() -> str:
    try:
        return find_redis_binary()
    except RedisMissingError as e:
        pytest.fail(str(e))


def no_retry() -> Retry:
    """No reconnecting. redis-py's default retries a command three times after a connection error, with a
    backoff that sleeps up to seconds each time: after a refused login (its AuthenticationError is a
    ConnectionError), and at every poll while a server is still starting."""
    return Retry(NoBackoff(), 0)


def redis_client(port: int, **options: Any) -> redis.Redis:
    """A client of a test's redis-server on loopback that fails at once (`no_retry`)."""
    return redis.Redis(host="127.0.0.1", port=port, retry=no_retry(), **options)


class RedisServer(RedisProcess):
    """`kill` is `kill -9`; `start` again reuses the folder, so the AOF written before the kill is replayed."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        appendfsync: Literal["always", "everysec", "no"] = "always",
        acl: RedisUsers | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        super().__init__(folder, port=port or free_port(), appendfsync=appendfsync, acl=acl, tls=tls)

    def admin_client(self, **options: Any) -> redis.Redis:
        """The operator's client, failing at once (`no_retry`): `start` polls the starting server with it."""
        return super().admin_client(**({"retry": no_retry()} | options))

    def start(self, *, timeout_s: float = START_TIMEOUT_S) -> Self:
        redis_binary()  # a missing binary fails the test with the hint
        return super().start(timeout_s=timeout_s)

    def kill(self) -> None:
        """`kill -9`: no shutdown, no final flush; only what the AOF already holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def flush(self) -> None:
        client = self.admin_client()
        try:
            client.flushall()
        finally:
            client.close()


def issue_tls(folder: Path, authority: Authority | None = None) -> InstanceTLS:
    """A cloud Redis instance's certificates in `folder` (as `fedlora.store_users` lays them out), from
    `authority` or a fresh CA: the server's (valid for 127.0.0.1), its service's and its operator's."""
    ca = authority or new_authority("fedlora test CA")
    return issue_store_certificates({"cloud": (folder, CLOUD_USER)}, ca, federation_id="test")["cloud"]
