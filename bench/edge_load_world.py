"""The federation `edge_load.py` loads: a real `redis-server`, a cloud and one edge started as `python -m`
processes on loopback, a thousand hospitals enrolled as their agents enrol (`services.enrolling.enrol`), and
the hospitals' signed uploads built before the load starts.

Each hospital uploads an encryption of the one-hot vector `ONE_HOT * e_k`, `k = index % KINDS`: the
round's decrypted mean, times the number of hospitals the cloud counted, then says how many uploads of each
kind reached the sum, which the load test compares with what the edge acknowledged. Each hospital encrypts
its own (a few milliseconds with the cheapest CKKS): the cloud refuses a ciphertext it has accepted before,
from any hospital, as a replay, so hospitals sharing a precomputed ciphertext would be dropped there.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from fedlora.enrolment_tokens import issue_enrolment_token
from fedlora.launcher import Cluster, LaunchError, Process, free_port, wait_until
from fedlora.redis_process import RedisProcess
from protocol.crypto import CKKSParams, scheme_from_public
from protocol.messages import (
    CentralDPConfig,
    ClientEnrolment,
    ClientUpdate,
    FederationInfo,
    FederationSpec,
    NoiseMechanism,
    Role,
    RoundPlan,
)
from services.enrolling import enrol
from services.http import Peer
from services.identity import SigningKey

FID = "edge-load"
EDGE_ID = "edge-load-1"
KINDS = 16  # distinct ciphertexts; hospital i uploads kind i % KINDS
ONE_HOT = 0.5  # the value of a kind's one coordinate: far inside CKKS' range, far above its error
#: The cheapest CKKS the spec allows: N = 4096 (2048 slots, one 64 kB ciphertext for a small layout), the
#: most modulus bits 128-bit security leaves at that degree (109, `CKKSParams._check_security`).
CHEAPEST_CKKS = CKKSParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49), global_scale_bits=40)
#: The edge's request-body limit in this run (`FEDLORA_MAX_BODY_BYTES`): twenty uploads' worth.
MAX_BODY_BYTES = 2 * 1024 * 1024
START_TIMEOUT_S = 120.0


def load_spec(*, deadline_s: float) -> FederationSpec:
    """One round, every hospital at the one edge, closing when all have uploaded (quorum 1.0); no central
    noise, so the published update is the exact mean of the uploads."""
    return FederationSpec(
        federation_id=FID,
        target_modules=("value",),
        layers_to_transform=(1,),
        r_max=1,
        rounds=1,
        min_clients_per_edge=2,
        quorum=1.0,
        central_dp=CentralDPConfig(mechanism=NoiseMechanism.NONE, noise_multiplier=0.0),
        round_deadline_s=deadline_s + 60,
        upload_deadline_s=deadline_s,
        he=CHEAPEST_CKKS,
    )


@dataclass
class Hospital:
    client_id: str
    key: SigningKey
    kind: int


@dataclass
class EdgeService:
    """The edge process: `kill` is SIGKILL of its process group, `restart` starts it on the same store."""

    cluster: Cluster
    env: dict[str, str]
    url: str
    process: Process
    restarts: int = 0

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30)
        self.cluster.processes.remove(self.process)  # its exit -9 is ours, not a failure

    async def restart(self) -> None:
        self.restarts += 1
        self.process = self.cluster.start(f"edge.restart{self.restarts}", "edge_aggregator", self.env)
        await wait_until(
            lambda: _healthy(self.url), timeout_s=START_TIMEOUT_S, what="the edge", cluster=self.cluster
        )


@dataclass
class World:
    cluster: Cluster
    redis: RedisProcess
    cloud_url: str
    admin: httpx.AsyncClient
    edge: EdgeService

    async def close(self) -> None:
        await self.admin.aclose()
        self.cluster.stop()
        self.redis.stop()


def _database(redis: RedisProcess, number: int) -> str:
    return f"redis://127.0.0.1:{redis.port}/{number}"


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def start_world(
    folder: Path, *, model_path: Path | None, spec: FederationSpec, max_body_bytes: int = MAX_BODY_BYTES
) -> World:
    """Redis, the cloud with `spec` created, and the edge enrolled (its store on database 1), taking request
    bodies up to `max_body_bytes` (an upload's own limit, set by the layout and scheme, applies below it)."""
    redis = RedisProcess(folder / "redis", port=free_port(), appendfsync="everysec")
    await asyncio.to_thread(redis.start)
    cluster = Cluster(folder / "logs")
    admin_token = secrets.token_urlsafe(32)
    port = free_port()
    cloud_env = {
        "FEDLORA_ADMIN_TOKEN": admin_token,
        "FEDLORA_KEK": secrets.token_hex(32),
        "FEDLORA_PORT": str(port),
        "FEDLORA_STORE_URL": _database(redis, 0),
        "FEDLORA_DEADLINE_CHECK_S": "0.2",
        # Plain http on loopback, said explicitly: the run measures the edge's own work on uploads, not TLS.
        "FEDLORA_ALLOW_PLAIN_HTTP": "true",
        **({"FEDLORA_MODEL_PATH": str(model_path)} if model_path is not None else {}),
    }
    cluster.start("cloud", "cloud_server", cloud_env)
    cloud_url = f"http://127.0.0.1:{port}"
    admin = httpx.AsyncClient(
        base_url=cloud_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
    )
    try:
        await wait_until(
            lambda: _healthy(cloud_url), timeout_s=START_TIMEOUT_S, what="the cloud", cluster=cluster
        )
        created = await admin.post("/federations", json=spec.model_dump(mode="json"))
        if created.status_code != 201:
            raise LaunchError(f"creating the federation failed: {created.status_code} {created.text[:500]}")
        edge_port = free_port()
        edge_url = f"http://127.0.0.1:{edge_port}"
        token = await issue_enrolment_token(admin, FID, Role.EDGE, EDGE_ID)
        edge_env = {
            "FEDLORA_EDGE_ID": EDGE_ID,
            "FEDLORA_FEDERATION_ID": FID,
            "FEDLORA_CLOUD_URL": cloud_url,
            "FEDLORA_PUBLIC_URL": edge_url,
            "FEDLORA_ENROLMENT_TOKEN": token.enrolment_token,
            "FEDLORA_KEY_FILE": str(folder / "edge.key"),
            "FEDLORA_PORT": str(edge_port),
            "FEDLORA_STORE_URL": _database(redis, 1),
            "FEDLORA_DEADLINE_CHECK_S": "0.2",
            "FEDLORA_MAX_BODY_BYTES": str(max_body_bytes),
            "FEDLORA_ALLOW_PLAIN_HTTP": "true",
        }
        edge = EdgeService(cluster, edge_env, edge_url, cluster.start("edge", "edge_aggregator", edge_env))
        await wait_until(
            lambda: _healthy(edge_url), timeout_s=START_TIMEOUT_S, what="the edge", cluster=cluster
        )

        async def edge_enrolled() -> bool:
            response = await admin.get(f"/federations/{FID}/edges")
            return response.status_code == 200 and EDGE_ID in {e["edge_id"] for e in response.json()}

        await wait_until(edge_enrolled, timeout_s=START_TIMEOUT_S, what="the edge to enrol", cluster=cluster)
    except BaseException:
        await admin.aclose()
        cluster.stop()
        redis.stop()
        raise
    return World(cluster, redis, cloud_url, admin, edge)


async def enrol_hospitals(world: World, count: int, *, concurrency: int) -> list[Hospital]:
    """`count` hospitals enrolled at the edge as their agents enrol: an enrolment token the admin issued for
    each id, then a signed challenge (`services.enrolling.enrol`), `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    peer = Peer(world.cloud_url, attempts=4)

    async def one(index: int) -> Hospital:
        client_id = f"hosp-{index:05d}"
        key = SigningKey.generate()
        async with gate:
            token = await issue_enrolment_token(world.admin, FID, Role.CLIENT, client_id)
            enrolment = ClientEnrolment(
                client_id=client_id, edge_id=EDGE_ID, public_key=key.public_bytes, num_examples=10
            )
            await enrol(peer, FID, enrolment, key, enrolment_token=token.enrolment_token)
        return Hospital(client_id, key, index % KINDS)

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await peer.close()


async def start_round(world: World) -> tuple[FederationInfo, RoundPlan]:
    """Start the federation and wait until the edge follows round 0; its info and the edge's view of the plan."""
    started = await world.admin.post(f"/federations/{FID}/start")
    if started.status_code not in (200, 201):
        raise LaunchError(f"starting the federation failed: {started.status_code} {started.text[:500]}")
    info = FederationInfo.model_validate_json((await world.admin.get(f"/federations/{FID}")).content)
    plan = RoundPlan.model_validate_json((await world.admin.get(f"/federations/{FID}/plan")).content)

    async def edge_follows() -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(f"{world.edge.url}/healthz")).json().get("round") == 0
        except httpx.TransportError:
            return False

    await wait_until(
        edge_follows, timeout_s=START_TIMEOUT_S, what="the edge to follow round 0", cluster=world.cluster
    )
    return info, plan.view(EDGE_ID)


def kind_vector(kind: int, size: int) -> np.ndarray:
    vector = np.zeros(size)
    vector[kind] = ONE_HOT
    return vector


async def encrypt_uploads(world: World, info: FederationInfo, hospitals: list[Hospital]) -> dict[str, bytes]:
    """Each hospital's ciphertext of its kind's vector, under the federation's public context."""
    public = (await world.admin.get(f"/federations/{FID}/public-context")).content
    scheme = scheme_from_public(info.spec.he, public)
    return {
        h.client_id: scheme.serialize(scheme.encrypt(kind_vector(h.kind, info.layout_size)))
        for h in hospitals
    }


def signed_upload(
    hospital: Hospital,
    plan: RoundPlan,
    ciphertext: bytes,
    *,
    key: SigningKey | None = None,
    client_id: str | None = None,
) -> bytes:
    """The hospital's signed upload for `plan`'s round with a fresh nonce, as JSON; `key` or `client_id`
    forge one (signed with another key, or by an id nobody enrolled)."""
    unsigned = ClientUpdate(
        federation_id=FID,
        round=plan.round,
        basis_version=plan.basis_version,
        client_id=client_id or hospital.client_id,
        rank=plan.client_ranks.get(hospital.client_id, 1),
        weight=1.0,
        num_examples=10,
        nonce=secrets.token_hex(16),
        ciphertext=ciphertext,
        plan_sha256=plan.sha256,
    )
    return unsigned.signed((key or hospital.key).sign).model_dump_json().encode()


def rss_bytes(pid: int) -> int | None:
    """The resident set size of process `pid` (`VmRSS` in /proc), None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None
