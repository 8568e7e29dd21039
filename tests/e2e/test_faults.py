"""Faults with real processes and a real `redis-server`: nothing acknowledged is lost, nothing counts twice.

The cloud and the edges run as `python -m` processes with Redis as their state store; the test plays the
hospitals over HTTP (see `helpers.py`) and computes the expected global update with numpy. Each test
injects one fault and then requires that round 0 closes with exactly the contributions that were
acknowledged, and that the decrypted global adapter equals the plain mean of their vectors:

1. the cloud is `kill -9`ed after it stored two edge aggregates and before it closed the round; a new
   cloud process on the same store closes the round once;
2. an edge is `kill -9`ed mid-round; restarted on the same store and key it still holds the uploads it
   had answered 202 and takes the rest;
3. a hospital drops out: the edge closes at its upload deadline with the others and forwards them;
4. the answer to an edge's forward is lost after the cloud took the aggregate (a TCP proxy drops it): the
   edge retries and the cloud counts the aggregate once;
5. Redis is `kill -9`ed mid-round (AOF, appendfsync always) and started again: uploads acknowledged before
   the crash are in the sum, an upload refused with 503 during the outage was not written (the page cache
   survives a process crash, so this says nothing about fsync: `test_power_loss.py` does);
6. two replicas of one edge behind one Redis take uploads of the same round: one sum, forwarded once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from protocol.messages import FederationInfo
from tests.e2e.conftest import CloudProcess, EdgeProcess, poll
from tests.e2e.helpers import (
    FID,
    adapter_vector,
    create_federation,
    edge_health,
    edge_progress,
    make_spec,
    round_status,
    start_round,
)
from tests.e2e.proxy import LosingProxy
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

ATOL = 1e-5
# Rounds that close at quorum get deadlines far beyond the test's steps (a restart on a loaded machine
# included); only the tests that wait for a deadline use short ones.
LONG = {"upload_deadline_s": 120, "round_deadline_s": 180}


def _assert_global(fed, status, contributors) -> None:
    assert status.state.value == "closed", status
    assert status.clients_contributed == len(contributors), status
    assert status.total_weight == pytest.approx(float(len(contributors)))
    assert status.adapter_version_out == 1
    np.testing.assert_allclose(adapter_vector(fed.cloud, 1), fed.expected_mean(contributors), atol=ATOL)
    info = FederationInfo.model_validate_json(fed.cloud.admin.get(f"/federations/{FID}").content)
    assert info.adapter_version == 1 and info.state.value == "completed"
    versions = fed.cloud.admin.get(f"/federations/{FID}/adapters").json()
    assert sorted(v["version"] for v in versions) == [0, 1]
    assert [v["round"] for v in versions if v["round"] is not None] == [0]
    assert fed.cloud.admin.get(f"/federations/{FID}/adapters/2/vector").status_code == 404


def _messages(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        try:
            out.append(json.loads(line).get("msg", ""))
        except ValueError:
            out.append(line)
    return out


def test_cloud_killed_between_aggregates_and_close(cluster, tmp_path, tiny_model_dir, redis_url):
    """Two of three expected edges forward; the cloud holds both aggregates and waits for its round
    deadline (the third edge's hospital drops out); `kill -9` then; a new cloud process closes the round."""
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, store_url=redis_url)
    created = create_federation(cloud, make_spec(upload_deadline_s=10, round_deadline_s=20))
    edges = {
        eid: EdgeProcess(cluster, tmp_path, cloud, eid, FID, store_url=redis_url)
        for eid in ("edge-1", "edge-2", "edge-3")
    }
    placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-2", "h-d": "edge-2", "h-e": "edge-3"}
    fed = start_round(cloud, created, list(edges.values()), placement, cluster=cluster, seed=1)
    for cid in ("h-a", "h-b", "h-c", "h-d"):  # h-e never uploads
        fed.upload_accepted(cid, edges[placement[cid]])

    def both_stored():
        status = round_status(cloud)
        forwarded = {e.edge_id for e in status.edges if e.forwarded}
        return status if forwarded == {"edge-1", "edge-2"} else None

    held = poll(both_stored, timeout_s=30, what="both aggregates at the cloud", cluster=cluster)
    assert held.state.value == "collecting" and held.clients_contributed == 4
    cloud.kill()
    first_log = _messages(cloud.log_lines(cloud.killed[0]))
    assert sum(m == "edge aggregate accepted" for m in first_log) == 2
    assert not any(m.startswith("round closed") for m in first_log), "the killed cloud had closed the round"

    cloud.restart()
    status = fed.wait_closed(timeout_s=60)
    assert {e.edge_id for e in status.edges if e.forwarded} == {"edge-1", "edge-2"}
    _assert_global(fed, status, ["h-a", "h-b", "h-c", "h-d"])
    assert any(m.startswith("round closed") for m in _messages(cloud.log_lines()))
    dropped_out = edge_progress(edges["edge-3"])  # closed at its upload deadline with nothing to forward
    assert dropped_out["uploads_accepted"] == 0 and dropped_out["forwarded"] is False


def test_edge_killed_mid_round_keeps_acknowledged_uploads(cluster, tmp_path, tiny_model_dir, redis_url):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, store_url=redis_url)
    created = create_federation(cloud, make_spec(**LONG))
    edge = EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID, store_url=redis_url)
    placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-1"}
    fed = start_round(cloud, created, [edge], placement, cluster=cluster, seed=2)
    fed.upload_accepted("h-a", edge)
    fed.upload_accepted("h-b", edge)

    edge.kill()
    edge.restart()
    # The new process enrols again and refetches the plan; the two acknowledged uploads are in the store.
    progress = poll(lambda: edge_progress(edge), timeout_s=60, what="the restarted edge", cluster=cluster)
    assert progress["uploads_accepted"] == 2 and progress["forwarded"] is False
    accepted = fed.upload_until_accepted("h-c", edge, timeout_s=60)
    assert accepted["count"] == 3

    status = fed.wait_closed(timeout_s=60)
    _assert_global(fed, status, ["h-a", "h-b", "h-c"])
    assert edge_progress(edge)["forwarded"] is True
    assert _messages(cloud.log_lines()).count("edge aggregate accepted") == 1


def test_hospital_dropout_round_closes_at_deadline(cluster, tmp_path, tiny_model_dir, redis_url):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, store_url=redis_url)
    created = create_federation(cloud, make_spec(upload_deadline_s=8, round_deadline_s=30))
    edge = EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID, store_url=redis_url)
    placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-1"}
    fed = start_round(cloud, created, [edge], placement, cluster=cluster, seed=3)
    fed.upload_accepted("h-a", edge)
    fed.upload_accepted("h-b", edge)
    assert round_status(cloud).state.value == "open"  # the edge waits for h-c until its upload deadline

    status = fed.wait_closed(timeout_s=60)
    _assert_global(fed, status, ["h-a", "h-b"])
    progress = edge_progress(edge)
    assert progress["expected_clients"] == 3 and progress["uploads_accepted"] == 2
    assert progress["forwarded"] is True
    # The straggler after the deadline is refused: its round is closed (and, one round planned, the
    # federation may already be known to have ended at the edge).
    late = fed.upload("h-c", edge)
    assert (late.status_code, late.json()["code"]) in ((409, "round_closed"), (410, "federation_not_active"))


def test_lost_forward_answer_is_retried_and_counted_once(cluster, tmp_path, tiny_model_dir, redis_url):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, store_url=redis_url)
    created = create_federation(cloud, make_spec(**LONG))
    with LosingProxy(cloud.port) as proxy:
        lossy = EdgeProcess(
            cluster,
            tmp_path,
            cloud,
            "edge-1",
            FID,
            store_url=redis_url,
            cloud_url=proxy.url,
        )
        direct = EdgeProcess(cluster, tmp_path, cloud, "edge-2", FID, store_url=redis_url)
        placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-2", "h-d": "edge-2"}
        fed = start_round(cloud, created, [lossy, direct], placement, cluster=cluster, seed=4)
        fed.upload_accepted("h-a", lossy)
        fed.upload_accepted("h-b", lossy)  # quorum at edge-1: it forwards through the proxy

        poll(
            lambda: (edge_progress(lossy) or {}).get("forwarded"),
            timeout_s=60,
            what="edge-1 to see its forward delivered",
            cluster=cluster,
        )
        assert len(proxy.dropped) == 1 and len(proxy.aggregate_posts) >= 2, proxy.aggregate_posts
        assert not proxy.errors, proxy.errors
        # The retry reached the cloud while the round was still open (edge-2 has not forwarded): one count.
        held = round_status(cloud)
        assert held.state.value == "collecting" and held.clients_contributed == 2, held

        fed.upload_accepted("h-c", direct)
        fed.upload_accepted("h-d", direct)
        status = fed.wait_closed(timeout_s=60)
    _assert_global(fed, status, ["h-a", "h-b", "h-c", "h-d"])
    assert {e.edge_id: e.uploads_accepted for e in status.edges} == {"edge-1": 2, "edge-2": 2}
    assert _messages(cloud.log_lines()).count("edge aggregate accepted") == 2  # the retry was recognised


def test_redis_restart_mid_round_loses_nothing_acknowledged(cluster, tmp_path, tiny_model_dir):
    redis = RedisServer(tmp_path / "redis", appendfsync="always").start()
    try:
        cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, store_url=redis.url)
        created = create_federation(cloud, make_spec(**LONG))
        edge = EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID, store_url=redis.url)
        placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-1"}
        fed = start_round(cloud, created, [edge], placement, cluster=cluster, seed=5)
        fed.upload_accepted("h-a", edge)
        fed.upload_accepted("h-b", edge)

        redis.kill()
        # While Redis is down the edge answers 503 store_unavailable (after its own reconnect attempts).
        refused = fed.upload("h-c", edge)
        assert (refused.status_code, refused.json()["code"]) == (503, "store_unavailable"), refused.text
        redis.start()
        assert "DB loaded from append only file" in (redis.folder / "redis.log").read_text()

        # The same upload again (same nonce): 202, so the 503 wrote nothing, not even the nonce marker.
        accepted = fed.upload_until_accepted("h-c", edge, timeout_s=60)
        assert accepted["count"] == 3  # h-a and h-b survived the crash
        status = fed.wait_closed(timeout_s=60)
        _assert_global(fed, status, ["h-a", "h-b", "h-c"])
    finally:
        cluster.stop()  # the services end while their store is still up, then Redis
        redis.stop()


def test_two_replicas_of_one_edge_share_one_sum(cluster, tmp_path, tiny_model_dir, redis_url):
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, store_url=redis_url)
    created = create_federation(cloud, make_spec(**LONG))
    replicas = [
        EdgeProcess(
            cluster,
            tmp_path,
            cloud,
            "edge-1",
            FID,
            store_url=redis_url,
            name=f"edge-1.{replica}",
        )
        for replica in ("a", "b")
    ]
    a, b = replicas
    assert a.env["FEDLORA_KEY_FILE"] == b.env["FEDLORA_KEY_FILE"] and a.port != b.port
    placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-1", "h-d": "edge-1"}
    fed = start_round(cloud, created, replicas, placement, cluster=cluster, seed=6)
    assert all(edge_health(r)["enrolled"] for r in replicas)
    fed.upload_accepted("h-a", a)
    fed.upload_accepted("h-b", b)
    fed.upload_accepted("h-c", a)
    fed.upload_accepted("h-d", b)

    status = fed.wait_closed(timeout_s=60)
    _assert_global(fed, status, ["h-a", "h-b", "h-c", "h-d"])
    assert [(e.edge_id, e.uploads_accepted, e.forwarded) for e in status.edges] == [("edge-1", 4, True)]
    for replica in replicas:
        # The cloud closed the round in the request that stored the sum; the edge records the forward's
        # outcome once it reads the answer, a moment later.
        progress = poll(
            lambda r=replica: (p := edge_progress(r)) is not None and p["forwarded"] and p,
            timeout_s=30,
            what=f"{replica.name} to record round 0 forwarded",
            cluster=cluster,
        )
        assert progress["uploads_accepted"] == 4, progress
    # Both replicas may have sent the (byte-identical) aggregate; the cloud stored it once.
    assert _messages(cloud.log_lines()).count("edge aggregate accepted") == 1
