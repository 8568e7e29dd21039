"""Builds a federation around one edge: a real CKKS key, an in-memory cloud, hospitals with real Ed25519
keys, an injected clock, and the edge's FastAPI app driven in-process (lifespan included)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from fastapi import FastAPI

from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.app import create_app
from edge_aggregator.folder import Folder, Step
from edge_aggregator.ledger import RoundLedger
from edge_aggregator.runtime import EdgeRuntime
from edge_aggregator.sum_seal import SumSeal
from protocol.crypto import HEScheme
from protocol.messages import (
    ClientInfo,
    ClientUpdate,
    FederationInfo,
    FederationSpec,
    FederationState,
    RoundPlan,
)
from protocol.upload_frame import UPLOAD_FRAME_MEDIA_TYPE
from services import keyspace
from services.identity import SigningKey
from services.settings import EdgeSettings
from services.store import StateStore
from tests.clock import T0, FakeClock

T = TypeVar("T")
FID = "fed-test"
EID = "edge-north"
LENGTH = 1000
POLL_S = 10.0


async def until(predicate: Callable[[], bool], *, what: str, timeout_s: float = POLL_S) -> None:
    """Poll `predicate` on the event loop until it holds; fail after `timeout_s`."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


@dataclass
class Hospital:
    client_id: str
    key: SigningKey
    vector: npt.NDArray[np.float64]
    weight: float = 1.0


@dataclass
class World:
    tmp_path: Path
    secret: HEScheme[Any]
    public: HEScheme[Any]
    spec: FederationSpec
    clock: FakeClock
    store: StateStore
    cloud: Any  # tests.edge.cloud.InMemoryCloud
    hospitals: dict[str, Hospital] = field(default_factory=dict)
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    plan_key: SigningKey = field(default_factory=SigningKey.generate)  # the cloud's plan-signing key

    @property
    def settings(self) -> EdgeSettings:
        values: dict[str, Any] = {
            "edge_id": EID,
            "federation_id": FID,
            "cloud_url": "http://cloud.test",
            "public_url": "http://edge-north.test:8710",
            "enrolment_token": "edge-enrol-Vq3kZ8pLw2Rt6Yx9",
            "key_file": self.tmp_path / "edge.key",
            "max_body_bytes": 1_000_000,
            "deadline_check_s": 60.0,  # tests tick by hand; quorum wakes the ticker at once
        }
        values.update(self.settings_overrides)
        return EdgeSettings(**values)

    def plan(
        self, round_: int = 0, *, clients: Sequence[str] | None = None, basis: int = 0, **fields: Any
    ) -> RoundPlan:
        """A plan signed with the cloud's plan key, as the cloud publishes it to this edge: its view."""
        names = list(self.hospitals) if clients is None else list(clients)
        fields.setdefault("edge_id", EID)
        plan = RoundPlan(
            federation_id=FID,
            round=round_,
            adapter_version=round_,
            basis_version=basis,
            deadline=self.clock.now + timedelta(seconds=60),
            client_ranks=dict.fromkeys(names, 4),
            clip_norm=1.0,
            **fields,
        )
        return plan.model_copy(update={"signature": self.plan_key.sign(plan.signing_payload())})

    def enrol(self, client_id: str, *, edge_id: str = EID, seed: int | None = None) -> Hospital:
        rng = np.random.default_rng(seed if seed is not None else len(self.hospitals))
        hospital = Hospital(client_id, SigningKey.generate(), rng.uniform(-1, 1, LENGTH), weight=1.0)
        self.cloud.clients[client_id] = ClientInfo(
            client_id=client_id,
            edge_id=edge_id,
            public_key=hospital.key.public_bytes,
            num_examples=100 + len(self.hospitals),
            rank=4,
            enrolled_at=T0,
        )
        if edge_id == EID:
            self.hospitals[client_id] = hospital
        return hospital

    def update(
        self,
        hospital: Hospital,
        *,
        round_: int = 0,
        basis: int = 0,
        nonce: str | None = None,
        ciphertext: bytes | None = None,
        signer: SigningKey | None = None,
        federation_id: str = FID,
        noise_share_std: float | None = None,
        plan_sha256: str | None = None,
    ) -> ClientUpdate:
        """A signed upload of the hospital's vector (or of the given ciphertext bytes), made under the plan the
        cloud published for `round_` unless `plan_sha256` names another."""
        if ciphertext is None:
            ciphertext = self.public.serialize(self.public.encrypt(hospital.vector))
        unsigned = ClientUpdate(
            federation_id=federation_id,
            round=round_,
            basis_version=basis,
            client_id=hospital.client_id,
            rank=4,
            weight=hospital.weight,
            num_examples=100,
            nonce=nonce or secrets.token_hex(16),
            ciphertext=ciphertext,
            noise_share_std=noise_share_std,
            plan_sha256=plan_sha256 or self.cloud.plan_sha256(round_),
        )
        return unsigned.signed((signer or hospital.key).sign)

    @property
    def edge_key(self) -> SigningKey:
        """The edge's private key, from its key file (created here if the edge has not started yet): what
        every replica of the edge loads."""
        return SigningKey.load_or_create(self.settings.key_file)

    def ledger(self) -> RoundLedger:
        """The edge's ledger on this world's store, as another replica's would be (the edge's key file)."""
        seal = SumSeal.derive(self.edge_key, edge_id=EID, federation_id=FID)
        return RoundLedger(self.store, edge_id=EID, federation_id=FID, seal=seal)

    def folder(self, *, step: Step | None = None, batch: int = 4) -> Folder:
        """A folder of the edge's rounds on this world's store, as another replica's would be, adding on the
        event loop."""

        ledger = self.ledger()
        extra: dict[str, Any] = {} if step is None else {"step": step}
        return Folder(ledger, scheme=self.public, length=LENGTH, run=_inline, batch=batch, **extra)

    async def stored_sum(self, round_: int = 0) -> npt.NDArray[np.float64]:
        """Decrypt the edge's running sum straight from the store (only the test holds the secret), once it
        holds every stored upload of the round: folded here unless the edge's own folder is at it."""
        folder = self.folder()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + POLL_S
        while not await folder.settle(round_):
            if loop.time() > give_up:
                raise AssertionError(f"round {round_}'s uploads were not folded in {POLL_S} s")
            await asyncio.sleep(0.002)
        raw = await self.store.get(keyspace.edge_sum(EID, FID, round_))
        assert raw is not None, f"no sum stored for round {round_}"
        return self.secret.decrypt(self.secret.deserialize(raw))

    async def has_sum(self, round_: int = 0) -> bool:
        return await self.store.get(keyspace.edge_sum(EID, FID, round_)) is not None

    def decrypt(self, ciphertext: bytes) -> npt.NDArray[np.float64]:
        return self.secret.decrypt(self.secret.deserialize(ciphertext))


async def _inline(fn: Callable[[], T]) -> T:
    return fn()


def federation_info(
    spec: FederationSpec, secret: HEScheme[Any], *, state: FederationState, plan_key: SigningKey | None = None
) -> FederationInfo:
    return FederationInfo(
        spec=spec,
        state=state,
        created_at=T0,
        he_fingerprint=secret.fingerprint.hex(),
        layout_size=LENGTH,
        layout_digest="0" * 64,
        plan_public_key=plan_key.public_bytes if plan_key is not None else None,
    )


@dataclass
class Edge:
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def runtime(self) -> EdgeRuntime:
        runtime: EdgeRuntime = self.app.state.runtime
        return runtime

    @property
    def core(self) -> EdgeAggregator:
        assert self.runtime.aggregator is not None
        return self.runtime.aggregator

    async def upload(
        self, update: ClientUpdate, *, round_: int | None = None, federation_id: str = FID
    ) -> httpx.Response:
        n = update.round if round_ is None else round_
        return await self.http.post(
            f"/federations/{federation_id}/rounds/{n}/uploads",
            content=update.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    async def upload_frame(self, body: bytes, *, round_: int = 0) -> httpx.Response:
        """POST `body` as the binary upload frame (`protocol.upload_frame`), as the hospitals' agents send."""
        return await self.http.post(
            f"/federations/{FID}/rounds/{round_}/uploads",
            content=body,
            headers={"Content-Type": UPLOAD_FRAME_MEDIA_TYPE},
        )

    async def progress(self, round_: int = 0) -> dict[str, Any]:
        response = await self.http.get(f"/federations/{FID}/rounds/{round_}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def running_edge(
    world: World, *, plan_wait_s: float = 25.0, wait_for_round: bool = True
) -> AsyncIterator[Edge]:
    """The edge app with its lifespan running, once it is ready (and follows a round, if one is open)."""
    app = create_app(
        world.settings, store=world.store, link=world.cloud, clock=world.clock, plan_wait_s=plan_wait_s
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge-north.test") as http:
            edge = Edge(app, http)
            await until(lambda: edge.runtime.aggregator is not None, what="the edge to be ready")
            if wait_for_round:
                await until(lambda: edge.core.plan is not None, what="the edge to follow a plan")
            yield edge


async def into_round_one(world: World, edge: Any) -> None:
    """Round 0 closes at `edge` with hosp-a and hosp-b (forwarded once) and round 1 opens there."""
    for cid in ("hosp-a", "hosp-b"):
        assert (await edge.upload(world.update(world.hospitals[cid]))).status_code == 202
    await until(lambda: len(world.cloud.attempts) == 1, what="round 0's forward")
    await world.cloud.publish(world.plan(1))
    await until(lambda: edge.core.plan is not None and edge.core.plan.round == 1, what="round 1")


async def alone_late_through_round_one(world: World, edge: Any) -> httpx.Response:
    """Round 0 closes with hosp-a and hosp-b; once round 1 opened, hosp-c uploads alone for round 0 (a late
    bucket of one); round 1 closes with hosp-a and hosp-b and is forwarded. hosp-c's answer."""
    await into_round_one(world, edge)
    lone = await edge.upload(world.update(world.hospitals["hosp-c"], round_=0))
    for cid in ("hosp-a", "hosp-b"):
        assert (await edge.upload(world.update(world.hospitals[cid], round_=1))).status_code == 202
    await until(lambda: len(world.cloud.attempts) == 2, what="round 1's forward")
    return lone
