"""A real `redis-server` for the tests: started on a free loopback port in a temporary folder, with AOF on.

Nothing here fakes Redis. `make test` installs Debian's `redis-server` when it is missing; run by hand,
`pytest` fails with a message that says so.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from services.launcher import free_port

START_TIMEOUT_S = 20.0


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        pytest.fail(
            "redis-server is not installed: `make test` installs it (Debian package redis-server), "
            "or run `apt-get install redis-server`"
        )
    return found


class RedisServer:
    """One `redis-server` process. `kill` is `kill -9`; `start` again reuses the folder, so the AOF
    written before the kill is replayed."""

    def __init__(self, folder: Path, *, port: int | None = None, appendfsync: str = "always") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_S} s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """`kill -9`: no shutdown, no final save; only what the AOF already holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def flush(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def log_tail(self, lines: int = 20) -> str:
        path = self.folder / "redis.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
