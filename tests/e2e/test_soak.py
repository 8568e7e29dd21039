"""Soak: many rounds with real processes, crashes and skewed clocks; every acknowledged upload is accounted for.

A cloud and two edges run as `python -m` processes on one real `redis-server` (`appendfsync always`, every
service Redis-backed). The test plays six hospitals over HTTP for `FEDLORA_SOAK_ROUNDS` rounds (default
30; `make soak` runs 300) on a tiny adapter, and keeps its own log of every upload an edge answered 202,
with the vector it carried. Between uploads it `kill -9`s an edge or the cloud at random (seeded) and
starts it again on the same store; the edges' clocks run a few seconds apart from the cloud's (libfaketime
preloaded into their processes: the real clock of the process, not a setting of ours); now and then a
hospital skips a round, so its edge closes at the upload deadline instead of at quorum.

Every round must end closed (or failed with every upload it was given counted dropped), and its
published update must be the plain mean of the vectors the test's log holds for it (CKKS, no central
noise: equal to 1e-5), less the uploads of an edge whose round status counts them as dropped, with a
reason (`uploads_dropped`: too few hospitals at its deadline, its sum too late for the cloud): an
acknowledged upload that neither reached the model nor was counted dropped, or one counted twice, fails
the test. Redis' memory must be flat after the retention window: what it keeps past the window grows by
the audit trail only, far less than one edge sum per round.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from protocol.crypto import scheme_from_public
from protocol.messages import FederationInfo, RoundPlan, RoundStatus
from tests.e2e.conftest import CloudProcess, EdgeProcess, poll
from tests.e2e.helpers import (
    FID,
    adapter_vector,
    create_federation,
    edge_health,
    edge_progress,
    enrol,
    make_spec,
    post_upload,
    round_status,
    signed_update,
    wait_edges_enrolled,
)
from tests.redis_server import RedisServer, redis_client

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("FEDLORA_SOAK_ROUNDS", "30"))
PLACEMENT = {f"hosp-{i}": "edge-1" if i < 3 else "edge-2" for i in range(6)}
# Each edge's clock against the cloud's, in seconds (libfaketime's relative offsets).
SKEW_S = {"edge-1": "+3", "edge-2": "-2"}
P_SKIP = 0.02  # a hospital sits a round out: its edge closes at the upload deadline
P_KILL_EDGE = 0.01  # per upload
P_KILL_CLOUD = 0.006
RETAIN_S = 2.0  # the services keep a finished round's sums this long (FEDLORA_RETAIN_ROUND_S)
DEADLINES = {"upload_deadline_s": 8, "round_deadline_s": 20, "forward_budget_s": 7, "max_clock_skew_s": 5}
ATOL = 1e-5

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def skewed(offset: str) -> dict[str, str]:
    """The environment that runs a process with its wall clock `offset` seconds off (monotonic time is left
    alone, so timers and timeouts inside the process still work)."""
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": f"{offset}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


@dataclass
class Log:
    """The test's own record of the run: what each edge acknowledged, per round (client id -> vector), what
    it refused (client id -> status and code), and which service was killed when."""

    acknowledged: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    refused: dict[int, dict[str, str]] = field(default_factory=dict)
    dropped: dict[int, dict[str, dict[str, int]]] = field(default_factory=dict)  # round -> edge -> reasons
    kills: list[str] = field(default_factory=list)

    def ack(self, round_: int, client_id: str, vector: np.ndarray) -> None:
        assert client_id not in self.acknowledged.setdefault(round_, {}), (round_, client_id)
        self.acknowledged[round_][client_id] = vector

    def refuse(self, round_: int, client_id: str, response: httpx.Response) -> None:
        self.refused.setdefault(round_, {})[client_id] = f"{response.status_code} {response.text[:160]}"


def kept_bytes(port: int, dbs: range) -> int:
    """What Redis holds past the retention window: the `MEMORY USAGE` of each key, in every database of
    `dbs`, that has no TTL or one longer than the window. (`INFO`'s `used_memory` also counts client buffers
    and allocator slack, which move with the load, and the sums of the rounds still inside the window.)"""
    total = 0
    for db in dbs:
        client = redis_client(port, db=db)
        try:
            for key in client.scan_iter(count=1000):
                ttl_ms = client.pttl(key)
                if ttl_ms == -1 or ttl_ms > RETAIN_S * 1000:
                    total += int(client.memory_usage(key, samples=0) or 0)
        finally:
            client.close()
    return total


def largest_keys(port: int, dbs: range, n: int = 15) -> list[tuple[int, int, str]]:
    """The `n` largest keys (bytes, database, key), for the message of a failed memory check."""
    sizes: list[tuple[int, int, str]] = []
    for db in dbs:
        client = redis_client(port, db=db)
        try:
            sizes += [
                (int(client.memory_usage(k, samples=0) or 0), db, k.decode()) for k in client.scan_iter()
            ]
        finally:
            client.close()
    return sorted(sizes, reverse=True)[:n]


@pytest.mark.timeout(180 + 8 * ROUNDS)
@pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime is missing: `make test` installs `faketime`"
)
def test_soak_every_acknowledged_upload_is_accounted_for(cluster, tmp_path, tiny_model_dir):
    server = RedisServer(tmp_path / "redis").start()
    try:
        _soak(cluster, tmp_path, tiny_model_dir, server, random.Random(19), np.random.default_rng(19))
    finally:
        cluster.stop()
        server.stop()


def _soak(cluster, tmp_path, tiny_model_dir, server, rng, np_rng) -> None:
    # Prepare: the cloud on database 0, edge-1 and edge-2 on 1 and 2 of one Redis, the edges' clocks skewed.
    retention = {"FEDLORA_RETAIN_ROUND_S": str(RETAIN_S), "FEDLORA_RETAIN_VERSIONS": "4"}
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir, retention, store_url=f"{server.url}/0")
    create_federation(cloud, make_spec(rounds=ROUNDS, min_clients_per_edge=2, **DEADLINES))
    edges = {
        eid: EdgeProcess(
            cluster,
            tmp_path,
            cloud,
            eid,
            FID,
            store_url=f"{server.url}/{i + 1}",
            env=skewed(SKEW_S[eid]) | retention,
        )
        for i, eid in enumerate(sorted(SKEW_S))
    }
    wait_edges_enrolled(cloud, edges, cluster=cluster)
    keys = {cid: enrol(cloud, cid, eid)[0] for cid, eid in PLACEMENT.items()}
    started = cloud.admin.post(f"/federations/{FID}/start")
    assert started.status_code in (200, 201), started.text
    info = FederationInfo.model_validate_json(cloud.admin.get(f"/federations/{FID}").content)
    scheme = scheme_from_public(info.spec.he, cloud.admin.get(f"/federations/{FID}/public-context").content)
    one_sum = len(scheme.serialize(scheme.encrypt(np.zeros(info.layout_size))))
    log = Log()
    memory: dict[int, int] = {}  # round -> bytes Redis holds after it
    began = time.monotonic()

    # Execute: the rounds, with crashes between uploads.
    for round_ in range(ROUNDS):
        plan = poll(
            lambda r=round_: _plan(cloud, r), timeout_s=120, what=f"round {round_}'s plan", cluster=cluster
        )
        poll(
            lambda r=round_: all(edge_health(e).get("round", -1) >= r for e in edges.values()),
            timeout_s=120,
            what=f"the edges to follow round {round_}",
            cluster=cluster,
        )
        uploading = [cid for cid in PLACEMENT if rng.random() >= P_SKIP]
        rng.shuffle(uploading)
        for cid in uploading:
            _maybe_crash(rng, cloud, edges, round_, log)
            vector = np_rng.normal(scale=0.05, size=info.layout_size)
            body = (
                signed_update(keys[cid], cid, plan.view(PLACEMENT[cid]), scheme, vector)
                .model_dump_json()
                .encode()
            )
            _send(edges[PLACEMENT[cid]], body, round_, cid, vector, log, cluster)
        status = poll(
            lambda r=round_: _ended(cloud, r), timeout_s=180, what=f"round {round_} to end", cluster=cluster
        )
        log.dropped[round_] = {eid: _edge_dropped(edge, round_, cluster) for eid, edge in edges.items()}
        _check_round(cloud, status, log)
        memory[round_] = kept_bytes(server.port, range(3))
        if (round_ + 1) % 25 == 0:
            print(
                f"soak: round {round_} done at {time.monotonic() - began:.0f} s; "
                f"{sum(len(v) for v in log.acknowledged.values())} uploads acknowledged; kills: {len(log.kills)}",
                flush=True,
            )
    elapsed = time.monotonic() - began

    # Assert: besides each round's own checks, the run crashed services, and what Redis keeps past the
    # retention window grew from the middle of the run to its end by the audit trail only (statuses, plans,
    # ledgers, nonce markers): less than a quarter of one edge sum per round, where each round would leave
    # eight ciphertexts (two edge sums, six uploads) without retention.
    acked = sum(len(v) for v in log.acknowledged.values())
    dropped = sum(
        n for edges_ in log.dropped.values() for reasons in edges_.values() for n in reasons.values()
    )
    middle = ROUNDS // 2
    print(
        f"soak: {ROUNDS} rounds in {elapsed:.0f} s; {acked} uploads acknowledged, {dropped} counted dropped, "
        f"{sum(len(v) for v in log.refused.values())} refused; kills: {log.kills}; Redis keeps past the window "
        f"{memory[middle] / 1e6:.2f} MB after round {middle} and {memory[ROUNDS - 1] / 1e6:.2f} MB after round "
        f"{ROUNDS - 1} (one edge sum: {one_sum / 1e3:.0f} kB)"
    )
    assert log.kills, "the soak killed no service: raise P_KILL_* or the rounds"
    per_round = (memory[ROUNDS - 1] - memory[middle]) / (ROUNDS - 1 - middle)
    print(f"soak: kept past the window, per round: {per_round / 1e3:.1f} kB")
    assert per_round < one_sum / 4, (per_round, one_sum, largest_keys(server.port, range(3)))


def _maybe_crash(
    rng: random.Random, cloud: CloudProcess, edges: dict[str, EdgeProcess], round_: int, log: Log
):
    if rng.random() < P_KILL_EDGE:
        victim = edges[rng.choice(sorted(edges))]
        log.kills.append(f"round {round_}: {victim.edge_id}")
        victim.kill()
        victim.restart()
    if rng.random() < P_KILL_CLOUD:
        log.kills.append(f"round {round_}: cloud")
        cloud.kill()
        cloud.restart()


def _plan(cloud: CloudProcess, round_: int) -> RoundPlan | None:
    try:
        response = cloud.admin.get(f"/federations/{FID}/plan")
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    plan = RoundPlan.model_validate_json(response.content)
    return plan if plan.round == round_ else None


def _send(
    edge: EdgeProcess, body: bytes, round_: int, cid: str, vector: np.ndarray, log: Log, cluster
) -> None:
    """The same bytes until the edge answers: a 202 goes in the log, a refusal with its code too; only a
    connection error (the edge is restarting), a 503 (its store is) or a retryable 409 is tried again."""

    def attempt() -> bool:
        try:
            response = post_upload(edge.url, body, round_=round_)
        except httpx.TransportError:
            return False
        if response.status_code == 503 or response.headers.get("Retry-After") is not None:
            return False
        if response.status_code == 202:
            log.ack(round_, cid, vector)
        else:
            log.refuse(round_, cid, response)
        return True

    poll(attempt, timeout_s=120, what=f"{cid}'s upload for round {round_}", cluster=cluster, interval_s=0.2)


def _ended(cloud: CloudProcess, round_: int) -> RoundStatus | None:
    try:
        status = round_status(cloud, round_)
    except (httpx.TransportError, AssertionError):
        return None
    return status if status.state.value in ("closed", "failed") else None


def _edge_dropped(edge: EdgeProcess, round_: int, cluster) -> dict[str, int]:
    progress: dict[str, Any] = poll(
        lambda: edge_progress(edge, round_),
        timeout_s=60,
        what=f"{edge.edge_id}'s round {round_}",
        cluster=cluster,
    )
    return dict(progress.get("uploads_dropped") or {})


def _check_round(cloud: CloudProcess, status: RoundStatus, log: Log) -> None:
    """The round's update is the mean of what the edges acknowledged, less what an edge counted dropped: an
    edge drops its round's uploads together (too few at its deadline, its sum too late), so a drop count
    names all of that edge's acknowledged uploads or none. A round may fail only with every upload it was
    given counted dropped (no edge forwarded in time: all refused, or dropped at the edges)."""
    round_ = status.round
    acknowledged = log.acknowledged.get(round_, {})
    counted: dict[str, np.ndarray] = {}
    for edge_id, reasons in log.dropped[round_].items():
        at_edge = {cid: v for cid, v in acknowledged.items() if PLACEMENT[cid] == edge_id}
        assert sum(reasons.values()) in (0, len(at_edge)), (round_, edge_id, reasons, sorted(at_edge))
        if not reasons:
            counted |= at_edge
    if status.state.value == "failed":
        dropped_at_cloud = sum(status.uploads_dropped.values())
        assert dropped_at_cloud == len(counted), (
            round_,
            status.failure,
            sorted(counted),
            status.uploads_dropped,
        )
        return
    assert status.state.value == "closed", (round_, status.failure, log.refused.get(round_))
    assert status.clients_contributed == len(counted), (round_, sorted(counted), log.dropped[round_], status)
    if not counted:
        return
    before = adapter_vector(cloud, status.adapter_version_in)
    after = adapter_vector(cloud, status.adapter_version_out)
    expected = np.mean(list(counted.values()), axis=0)
    np.testing.assert_allclose(after - before, expected, atol=ATOL, err_msg=f"round {round_}")
