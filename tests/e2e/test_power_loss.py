"""Power loss, not a process crash: Redis keeps its append-only file on a disk that drops every write not
yet fsync'ed (`tests/volatile_disk.py`), and the whole machine goes down at once (cloud, edges and Redis
`kill -9`ed, then the disk's unsynced data thrown away).

The cloud and two edges run as `python -m` processes on that Redis. Before the power loss the test holds
acknowledgements of both kinds: edge-1 forwarded its aggregate (the cloud answered 202) and edge-2 answered
202 to one of its two uploads. The services are killed first, so that what Redis holds then is all that
anyone was told is stored; the test copies that dataset and compares it with what Redis replays after the
power loss.

- `appendfsync always`: every key and value is back, and after the services restart on it the round
  closes with all four hospitals in the global mean.
- `appendfsync no` (the control): the same run loses acknowledged writes, so the disk does drop what was
  not fsync'ed and the first test could fail. (`everysec` loses the last second or so, depending on
  timing; `no` loses all of it, every run.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis

from services import keyspace
from tests.e2e.conftest import CloudProcess, EdgeProcess, poll
from tests.e2e.helpers import (
    FID,
    Federation,
    adapter_vector,
    create_federation,
    edge_progress,
    make_spec,
    round_status,
    start_round,
)
from tests.redis_server import RedisServer, redis_client
from tests.volatile_disk import VolatileDisk

pytestmark = pytest.mark.slow

PLACEMENT = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-2", "h-d": "edge-2"}
# Where the two acknowledgements are stored: the cloud's aggregates of round 0 (edge-1's is in it) and
# edge-2's record of h-c's upload.
ACKNOWLEDGED = (
    keyspace.fed_round_aggregates(FID, 0).encode(),
    keyspace.edge_upload("edge-2", FID, 0, "h-c").encode(),
)
# Keys that may expire between the copy and the replay (leases, short-lived markers) are not compared.
COMPARE_MIN_TTL_MS = 60_000


@dataclass
class PoweredOff:
    """The federation as it stood when the power went, and Redis's dataset then and after the replay."""

    fed: Federation
    edges: dict[str, EdgeProcess]
    before: dict[bytes, object]
    after: dict[bytes, object]


def dataset(client: redis.Redis) -> dict[bytes, object]:
    """Every key that does not expire within `COMPARE_MIN_TTL_MS`, with its value read by its type."""
    readers = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"set": client.smembers,
        b"list": lambda key: client.lrange(key, 0, -1),
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"stream": client.xrange,
    }
    out: dict[bytes, object] = {}
    for key in client.scan_iter(count=1000):
        ttl_ms = client.pttl(key)
        if ttl_ms == -2 or 0 <= ttl_ms < COMPARE_MIN_TTL_MS:
            continue
        out[key] = readers[client.type(key)](key)
    return out


def _read(server: RedisServer) -> dict[bytes, object]:
    client = redis_client(server.port)
    try:
        return dataset(client)
    finally:
        client.close()


def acknowledge_then_lose_power(
    cluster, tmp_path: Path, model_dir: Path, disk: VolatileDisk, server: RedisServer
) -> PoweredOff:
    cloud = CloudProcess(cluster, tmp_path, model_dir, store_url=server.url)
    created = create_federation(cloud, make_spec(upload_deadline_s=120, round_deadline_s=180))
    edges = {
        eid: EdgeProcess(cluster, tmp_path, cloud, eid, FID, store_url=server.url)
        for eid in ("edge-1", "edge-2")
    }
    fed = start_round(cloud, created, list(edges.values()), PLACEMENT, cluster=cluster, seed=19)
    fed.upload_accepted("h-a", edges["edge-1"])
    fed.upload_accepted("h-b", edges["edge-1"])  # all of edge-1's hospitals: it forwards
    poll(
        lambda: (edge_progress(edges["edge-1"]) or {}).get("forwarded"),
        timeout_s=60,
        what="the cloud to acknowledge edge-1's aggregate",
        cluster=cluster,
    )
    fed.upload_accepted("h-c", edges["edge-2"])  # edge-2 waits for h-d
    held = round_status(cloud)
    assert {e.edge_id: e.forwarded for e in held.edges} == {"edge-1": True, "edge-2": False}, held

    for service in (cloud, *edges.values()):
        service.kill()
    before = _read(server)
    server.kill()
    disk.power_cut()
    server.start()
    return PoweredOff(fed, edges, before, _read(server))


def _lost(state: PoweredOff) -> dict[bytes, object]:
    return {key: value for key, value in state.before.items() if state.after.get(key) != value}


def test_power_loss_keeps_everything_acknowledged(cluster, tmp_path, tiny_model_dir, volatile_disk):
    server = RedisServer(volatile_disk.mountpoint / "redis", appendfsync="always").start()
    try:
        state = acknowledge_then_lose_power(cluster, tmp_path, tiny_model_dir, volatile_disk, server)
        assert not _lost(state), sorted(_lost(state))
        assert all(key in state.after for key in ACKNOWLEDGED), sorted(state.after)
        assert b"edge-1" in state.after[ACKNOWLEDGED[0]]  # type: ignore[operator]

        # The machine is back: the services restart on the replayed store and the round completes.
        fed = state.fed
        fed.cloud.restart()
        for edge in state.edges.values():
            edge.restart()
        progress = poll(
            lambda: edge_progress(state.edges["edge-2"]),
            timeout_s=60,
            what="the restarted edge-2",
            cluster=cluster,
        )
        assert progress["uploads_accepted"] == 1 and progress["forwarded"] is False
        assert fed.upload_until_accepted("h-d", state.edges["edge-2"], timeout_s=60)["count"] == 2
        status = fed.wait_closed(timeout_s=60)
        assert status.clients_contributed == 4 and {e.edge_id for e in status.edges if e.forwarded} == {
            "edge-1",
            "edge-2",
        }
        np.testing.assert_allclose(adapter_vector(fed.cloud, 1), fed.expected_mean(PLACEMENT), atol=1e-5)
    finally:
        cluster.stop()
        server.stop()


def test_power_loss_without_fsync_loses_acknowledged_writes(cluster, tmp_path, tiny_model_dir, volatile_disk):
    """The control: without fsync nothing written since Redis started is on the disk, so what the
    services acknowledged (federation, enrolments, uploads, edge-1's aggregate) is gone."""
    server = RedisServer(volatile_disk.mountpoint / "redis", appendfsync="no").start()
    try:
        state = acknowledge_then_lose_power(cluster, tmp_path, tiny_model_dir, volatile_disk, server)
        assert all(key in state.before for key in ACKNOWLEDGED), sorted(state.before)
        assert _lost(state) == state.before and not state.after
    finally:
        cluster.stop()
        server.stop()
