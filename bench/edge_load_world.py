"""The federation `edge_load.py` and `round_scale.py` load: a real `redis-server`, a cloud and one edge or
more started as `python -m` processes on loopback, hospitals enrolled as their agents enrol
(`services.enrolling.enrol`, spread over the edges in turn), and the hospitals' signed uploads built before
the load starts.

Each hospital uploads an encryption of the one-hot vector `ONE_HOT * e_k`, `k = index % KINDS`: the
round's decrypted mean, times the number of hospitals the cloud counted, then says how many uploads of each
kind reached the sum, which the load test compares with what the edge acknowledged. Each hospital encrypts
its own (a few milliseconds with the cheapest CKKS): the cloud refuses a ciphertext it has accepted before,
from any hospital, as a replay, so hospitals sharing a precomputed ciphertext would be dropped there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from fedlora.enrolment_tokens import issue_enrolment_token
from fedlora.launcher import Cluster, LaunchError, Process, free_port, wait_until
from fedlora.redis_process import RedisProcess
from protocol.crypto import CKKSParams, HEParams, scheme_from_public
from protocol.messages import (
    CentralDPConfig,
    ClientEnrolment,
    ClientUpdate,
    FederationInfo,
    FederationSpec,
    NoiseMechanism,
    Role,
    RoundPlan,
    RoundStatus,
)
from services.enrolling import enrol
from services.http import Peer
from services.identity import SigningKey

FID = "edge-load"


def edge_id_of(index: int) -> str:
    """The id of the `index`-th edge a world starts (0-based)."""
    return f"edge-load-{index + 1}"


EDGE_ID = edge_id_of(0)
KINDS = 16  # distinct ciphertexts; hospital i uploads kind i % KINDS
ONE_HOT = 0.5  # the value of a kind's one coordinate: far inside CKKS' range, far above its error
#: The cheapest CKKS the spec allows: N = 4096 (2048 slots, one 64 kB ciphertext for a small layout), the
#: most modulus bits 128-bit security leaves at that degree (109, `CKKSParams._check_security`).
CHEAPEST_CKKS = CKKSParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 49), global_scale_bits=40)
#: The edge's request-body limit in this run (`FEDLORA_MAX_BODY_BYTES`): twenty uploads' worth.
MAX_BODY_BYTES = 2 * 1024 * 1024
START_TIMEOUT_S = 120.0


def load_spec(
    *,
    deadline_s: float,
    he: HEParams = CHEAPEST_CKKS,
    target_modules: tuple[str, ...] = ("value",),
    layers: tuple[int, ...] = (1,),
    r_max: int = 1,
) -> FederationSpec:
    """One round, closing when every hospital has uploaded (quorum 1.0); no central noise, so the published
    update is the exact mean of the uploads. The default adapter is one LoRA module at rank 1 under the
    cheapest CKKS; `round_scale.py` asks for larger ones."""
    return FederationSpec(
        federation_id=FID,
        target_modules=target_modules,
        layers_to_transform=layers,
        r_max=r_max,
        rounds=1,
        min_clients_per_edge=2,
        quorum=1.0,
        central_dp=CentralDPConfig(mechanism=NoiseMechanism.NONE, noise_multiplier=0.0),
        round_deadline_s=deadline_s + 60,
        upload_deadline_s=deadline_s,
        he=he,
    )


@dataclass
class Hospital:
    client_id: str
    key: SigningKey
    kind: int
    edge_id: str = EDGE_ID


@dataclass
class EdgeService:
    """The edge process: `kill` is SIGKILL of its process group, `restart` starts it on the same store."""

    cluster: Cluster
    edge_id: str
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
        self.process = self.cluster.start(
            f"{self.edge_id}.restart{self.restarts}", "edge_aggregator", self.env
        )
        await wait_until(
            lambda: _healthy(self.url), timeout_s=START_TIMEOUT_S, what="the edge", cluster=self.cluster
        )


@dataclass
class World:
    cluster: Cluster
    redis: RedisProcess
    cloud_url: str
    cloud: Process
    admin: httpx.AsyncClient
    edges: list[EdgeService]

    @property
    def edge(self) -> EdgeService:
        """The first edge: the only one `edge_load.py` starts."""
        return self.edges[0]

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
    folder: Path,
    *,
    model_path: Path | None,
    spec: FederationSpec,
    edges: int = 1,
    max_body_bytes: int | None = MAX_BODY_BYTES,
) -> World:
    """Redis, the cloud with `spec` created, and `edges` edges enrolled (edge k's store on database k + 1);
    `max_body_bytes` is each edge's request-body ceiling (None: the services' default)."""
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
        # Plain http on loopback, said explicitly: the runs measure the services' work on uploads, not TLS.
        "FEDLORA_ALLOW_PLAIN_HTTP": "true",
        **({"FEDLORA_MODEL_PATH": str(model_path)} if model_path is not None else {}),
    }
    cloud = cluster.start("cloud", "cloud_server", cloud_env)
    cloud_url = f"http://127.0.0.1:{port}"
    admin = httpx.AsyncClient(
        base_url=cloud_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
    )
    world = World(cluster, redis, cloud_url, cloud, admin, [])
    try:
        await wait_until(
            lambda: _healthy(cloud_url), timeout_s=START_TIMEOUT_S, what="the cloud", cluster=cluster
        )
        created = await admin.post("/federations", json=spec.model_dump(mode="json"))
        if created.status_code != 201:
            raise LaunchError(f"creating the federation failed: {created.status_code} {created.text[:500]}")
        for index in range(edges):
            world.edges.append(await _start_edge(world, folder, index, max_body_bytes=max_body_bytes))
        for edge in world.edges:
            await wait_until(
                functools.partial(_healthy, edge.url),
                timeout_s=START_TIMEOUT_S,
                what=edge.edge_id,
                cluster=cluster,
            )

        async def edges_enrolled() -> bool:
            response = await admin.get(f"/federations/{FID}/edges")
            enrolled = {e["edge_id"] for e in response.json()} if response.status_code == 200 else set()
            return {edge.edge_id for edge in world.edges} <= enrolled

        await wait_until(
            edges_enrolled, timeout_s=START_TIMEOUT_S, what="the edges to enrol", cluster=cluster
        )
    except BaseException:
        await world.close()
        raise
    return world


async def _start_edge(world: World, folder: Path, index: int, *, max_body_bytes: int | None) -> EdgeService:
    """Edge `index` started with an enrolment token of its own, its store on database `index + 1`."""
    edge_id = edge_id_of(index)
    edge_port = free_port()
    edge_url = f"http://127.0.0.1:{edge_port}"
    token = await issue_enrolment_token(world.admin, FID, Role.EDGE, edge_id)
    edge_env = {
        "FEDLORA_EDGE_ID": edge_id,
        "FEDLORA_FEDERATION_ID": FID,
        "FEDLORA_CLOUD_URL": world.cloud_url,
        "FEDLORA_PUBLIC_URL": edge_url,
        "FEDLORA_ENROLMENT_TOKEN": token.enrolment_token,
        "FEDLORA_KEY_FILE": str(folder / f"{edge_id}.key"),
        "FEDLORA_PORT": str(edge_port),
        "FEDLORA_STORE_URL": _database(world.redis, index + 1),
        "FEDLORA_DEADLINE_CHECK_S": "0.2",
        **({"FEDLORA_MAX_BODY_BYTES": str(max_body_bytes)} if max_body_bytes is not None else {}),
        "FEDLORA_ALLOW_PLAIN_HTTP": "true",
    }
    process = world.cluster.start(edge_id, "edge_aggregator", edge_env)
    return EdgeService(world.cluster, edge_id, edge_env, edge_url, process)


async def enrol_hospitals(world: World, count: int, *, concurrency: int) -> list[Hospital]:
    """`count` hospitals enrolled as their agents enrol, hospital `i` at edge `i % edges`: an enrolment
    token the admin issued for each id, then a signed challenge (`services.enrolling.enrol`), `concurrency`
    at a time."""
    gate = asyncio.Semaphore(concurrency)
    peer = Peer(world.cloud_url, attempts=4)

    async def one(index: int) -> Hospital:
        client_id = f"hosp-{index:05d}"
        edge_id = world.edges[index % len(world.edges)].edge_id
        key = SigningKey.generate()
        async with gate:
            token = await issue_enrolment_token(world.admin, FID, Role.CLIENT, client_id)
            enrolment = ClientEnrolment(
                client_id=client_id, edge_id=edge_id, public_key=key.public_bytes, num_examples=10
            )
            await enrol(peer, FID, enrolment, key, enrolment_token=token.enrolment_token)
        return Hospital(client_id, key, index % KINDS, edge_id)

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await peer.close()


async def start_round(world: World) -> tuple[FederationInfo, RoundPlan]:
    """Start the federation and wait until every edge follows round 0; its info and the whole round's plan
    (`RoundPlan.view(edge_id)` is what an edge's hospitals sign against)."""
    started = await world.admin.post(f"/federations/{FID}/start")
    if started.status_code not in (200, 201):
        raise LaunchError(f"starting the federation failed: {started.status_code} {started.text[:500]}")
    info = FederationInfo.model_validate_json((await world.admin.get(f"/federations/{FID}")).content)
    plan = RoundPlan.model_validate_json((await world.admin.get(f"/federations/{FID}/plan")).content)

    async def follows(edge: EdgeService) -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(f"{edge.url}/healthz")).json().get("round") == 0
        except httpx.TransportError:
            return False

    for edge in world.edges:
        await wait_until(
            functools.partial(follows, edge),
            timeout_s=START_TIMEOUT_S,
            what=f"{edge.edge_id} to follow round 0",
            cluster=world.cluster,
        )
    return info, plan


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
    update = signed_update(hospital, plan, ciphertext, key=key, client_id=client_id)
    return update.model_dump_json().encode()


def signed_update(
    hospital: Hospital,
    plan: RoundPlan,
    ciphertext: bytes,
    *,
    key: SigningKey | None = None,
    client_id: str | None = None,
) -> ClientUpdate:
    """The hospital's signed upload for `plan`'s round with a fresh nonce (`signed_upload`, unserialised)."""
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
    return unsigned.signed((key or hospital.key).sign)


def rss_bytes(pid: int) -> int | None:
    """The resident set size of process `pid` (`VmRSS` in /proc), None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class Memory:
    """Peak resident memory of each process `sample` is given, by pid (a restarted one has a new pid),
    sampled every 20 ms."""

    peak: dict[int, int] = field(default_factory=dict)  # pid -> bytes

    async def sample(self, pids: Callable[[], Iterable[int]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            for pid in pids():
                if (rss := rss_bytes(pid)) is not None:
                    self.peak[pid] = max(self.peak.get(pid, 0), rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.02)


async def round_outcome(world: World, *, timeout_s: float, interval_s: float = 0.5) -> RoundStatus:
    """Round 0's status once it has closed or failed, polled every `interval_s`."""

    async def ended() -> RoundStatus | None:
        response = await world.admin.get(f"/federations/{FID}/rounds/0")
        if response.status_code != 200:
            return None
        status = RoundStatus.model_validate_json(response.content)
        return status if status.state.value in ("closed", "failed") else None

    return await wait_until(
        ended, timeout_s=timeout_s, what="round 0 to end", cluster=world.cluster, interval_s=interval_s
    )


async def adapter_vector(world: World, version: int) -> np.ndarray:
    """Global adapter `version` as the cloud serves it (float32)."""
    response = await world.admin.get(f"/federations/{FID}/adapters/{version}/vector")
    response.raise_for_status()
    return np.frombuffer(response.content, dtype="<f4")
