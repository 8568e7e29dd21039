"""The power-loss disk of `tests/volatile_disk.py` keeps exactly what was fsync'ed, and Redis on it keeps
what it acknowledged under `appendfsync always` and loses it under `no`."""

from __future__ import annotations

import os

from tests.redis_server import RedisServer, redis_client
from tests.volatile_disk import VolatileDisk


def test_only_fsynced_data_survives_a_power_cut(volatile_disk):
    root = volatile_disk.mountpoint
    (root / "never-synced").write_bytes(b"gone")
    with open(root / "synced", "wb") as handle:
        handle.write(b"kept")
        handle.flush()
        os.fsync(handle.fileno())
        handle.write(b" and not this")
    with open(root / "appended", "ab") as handle:
        handle.write(b"0123")
        handle.flush()
        os.fdatasync(handle.fileno())
    with open(root / "appended", "r+b") as handle:
        handle.truncate(2)
    (root / "dir").mkdir()
    with open(root / "dir" / "tmp", "wb") as handle:
        handle.write(b"renamed")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(root / "dir" / "tmp", root / "dir" / "final")
    # Before the power cut every write is visible, as from a page cache.
    assert (root / "synced").read_bytes() == b"kept and not this"
    assert (root / "appended").read_bytes() == b"01"

    volatile_disk.power_cut()

    assert (root / "never-synced").read_bytes() == b""  # the file exists: metadata is durable at once
    assert (root / "synced").read_bytes() == b"kept"
    assert (root / "appended").read_bytes() == b"0123"  # the truncate was never synced
    assert sorted(os.listdir(root / "dir")) == ["final"]
    assert (root / "dir" / "final").read_bytes() == b"renamed"


def _keys_after_power_cut(disk: VolatileDisk, appendfsync) -> int:
    server = RedisServer(disk.mountpoint / "redis", appendfsync=appendfsync).start()
    try:
        client = redis_client(server.port)
        for i in range(50):
            assert client.set(f"acknowledged:{i}", i)  # OK from Redis: an acknowledged write
        client.close()
        server.kill()
        disk.power_cut()
        server.start()
        client = redis_client(server.port)
        count = int(client.dbsize())
        client.close()
        return count
    finally:
        server.stop()


def test_redis_with_appendfsync_always_keeps_acknowledged_writes(volatile_disk):
    assert _keys_after_power_cut(volatile_disk, "always") == 50


def test_redis_without_fsync_loses_acknowledged_writes(volatile_disk):
    """The control: the disk really drops what was not fsync'ed (a `kill -9` of Redis alone would not)."""
    assert _keys_after_power_cut(volatile_disk, "no") == 0
