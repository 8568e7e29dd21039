"""A `redis-server` this program starts and stops itself: loopback only, one data folder, AOF on, and with
`tls` TLS only (`rediss://`).

`fedlora demo` keeps its cloud's state in one (under the run folder), `fedlora view` starts it again on
the same folder, and the tests start theirs the same way (`tests/redis_server.py`). `stop` sends
SHUTDOWN, so Redis flushes the append-only file before it exits and the next start replays all of it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Literal, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fedlora.store_certs import ServerTLS
from fedlora.store_users import RedisUsers

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
#: Where Debian's package puts the binary, for a PATH without /usr/sbin or /usr/bin.
_KNOWN_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server")
MISSING_HINT = (
    "redis-server is not installed: `make redis-server` installs Debian's package redis-server "
    "(or run `sudo apt-get install redis-server`)"
)


class RedisProcessError(RuntimeError):
    """A redis-server this program manages could not be found, started or stopped."""


class RedisMissingError(RedisProcessError):
    """No `redis-server` binary on this machine."""


def redis_binary() -> str:
    """The path of `redis-server`; `RedisMissingError` naming the package when there is none."""
    found = shutil.which("redis-server") or next((p for p in _KNOWN_PATHS if Path(p).is_file()), None)
    if found is None:
        raise RedisMissingError(MISSING_HINT)
    return found


class RedisProcess:
    """One `redis-server` on 127.0.0.1:`port` with its data (AOF) and log (`redis.log`) in `folder`, with the
    ACL users of one instance `acl` (`fedlora.store_users`) when given: it is then stopped as its admin user.
    With `tls` (`fedlora.store_certs`) it serves TLS only: no plain port (`port 0`), `tls-port` on `port`, and
    every client must show a certificate of the same CA (`tls-auth-clients yes`) as well as its password; its
    own admin connections show the server's certificate, which the process holding the server's key may.

        `start` again after `stop` (or a crash) reuses the folder, so Redis replays the AOF it left there.
        `appendfsync` is Redis' own trade-off: `always` fsyncs before it answers, so a power loss keeps every
        write Redis acknowledged (`tests/e2e/test_power_loss.py`); `everysec` may lose the last second or two
        of them, `no` everything the OS had not flushed on its own.
    """

    def __init__(
        self,
        folder: Path,
        *,
        port: int,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        acl: RedisUsers | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        self.folder = folder
        self.port = port
        self.appendfsync = appendfsync
        self.acl = acl
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    def admin_client(self, **options: Any) -> redis.Redis:
        """A client as the operator's ACL user when the server runs with `acl`, else Redis' default user."""
        admin = self.acl.admin if self.acl is not None else None
        tls = self.tls.client().redis_options() | {"ssl": True} if self.tls is not None else {}
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=admin.name if admin is not None else None,
            password=admin.password if admin is not None else None,
            **tls,
            **options,
        )

    @property
    def log(self) -> Path:
        return self.folder / "redis.log"

    @property
    def url(self) -> str:
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _listen_args(self) -> tuple[str, ...]:
        if self.tls is None:
            return ("--port", str(self.port), "--bind", "127.0.0.1")
        return (
            *("--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(self.tls.cert_file.resolve())),
            *("--tls-key-file", str(self.tls.key_file.resolve())),
            *("--tls-ca-cert-file", str(self.tls.ca_file.resolve())),
            *("--tls-auth-clients", "yes"),
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, timeout_s: float = START_TIMEOUT_S) -> Self:
        """Start the server and return once it answers PING (bounded by `timeout_s`)."""
        binary = redis_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as handle:  # the child keeps its own descriptor
            self.process = subprocess.Popen(  # noqa: S603 - Debian's binary, arguments of our own
                [
                    binary,
                    *self._listen_args(),
                    *("--dir", str(self.folder.resolve())),
                    *("--appendonly", "yes", "--appendfsync", self.appendfsync),
                    *("--save", ""),  # the AOF is the only persistence, as in deploy/redis.conf
                    *("--maxmemory-policy", "noeviction"),
                    *("--daemonize", "no"),
                    # The tiers' users, each confined to its keys, and the default user off.
                    *(("--aclfile", str(self.acl.acl_file.resolve())) if self.acl is not None else ()),
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
            )
        client = self.admin_client(socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisProcessError(
                        f"redis-server on port {self.port} exited with {self.process.returncode}:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self._end(signal_first=True, timeout_s=STOP_TIMEOUT_S)
                    raise RedisProcessError(
                        f"redis-server on port {self.port} did not answer within {timeout_s:g} s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.05)  # the poll interval, bounded by the deadline above
        finally:
            client.close()

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SHUTDOWN (Redis flushes and fsyncs the AOF), then wait; SIGTERM, then SIGKILL, if it hangs."""
        if not self.alive():
            return
        # No retry: SHUTDOWN ends in the server closing the connection, which redis-py's default retries
        # would take for a lost connection and redial a server that is gone, for seconds.
        client = self.admin_client(socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        try:
            client.shutdown()  # redis-py returns once the server has closed the connection
        except redis.RedisError:
            pass  # it did not take the command; SIGTERM below asks for the same clean shutdown
        finally:
            client.close()
        self._end(signal_first=False, timeout_s=timeout_s)

    def _end(self, *, signal_first: bool, timeout_s: float) -> None:
        assert self.process is not None  # only called on a started process
        if signal_first:
            self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
        if not signal_first:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
                return
            except subprocess.TimeoutExpired:
                pass
        self.process.kill()
        self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
