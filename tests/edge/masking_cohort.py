"""One masking cohort at the in-process edge, driven over HTTP by real `MaskingClient`s.

A masking federation (packed Paillier with `masking=True`, 2048-bit keys) with ten hospitals at
the edge; each hospital is a `MaskingClient` with its enrolled Ed25519 key, and every message goes through
the edge's routes (`/federations/{fid}/rounds/{n}/masking/...`). The methods follow the stages in order;
a stage's hospitals are whoever the test names, so that the others drop there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from client_agent.masking import CohortSession
from protocol.crypto import HEScheme
from protocol.messages import EdgeAggregate, IdentityKeys, RoundPlan
from protocol.secagg import (
    CohortId,
    Inbox,
    MaskingClient,
    Roster,
    Stage,
    SurvivorSet,
    UnmaskRequest,
    residues_from_bytes,
)
from services.http import Peer
from services.identity import verifier
from tests.edge.harness import EID, FID, Edge, World

STAGE_S = 10.0  # the edge's `masking_stage_s` in these tests
K = 3  # min_clients_per_edge
HOSPITALS = [f"hosp-{i:02d}" for i in range(10)]


def masking_path(what: str, *, round_: int = 0, federation_id: str = FID) -> str:
    return f"/federations/{federation_id}/rounds/{round_}/masking/{what}"


def enrolled_verifier(world: World) -> Any:
    """What a hospital checks its peers' signatures with: the keys the cloud's roster would answer."""

    def public_key(client_id: str) -> bytes | None:
        hospital = world.hospitals.get(client_id)
        return hospital.key.public_bytes if hospital is not None else None

    return verifier(public_key)


@dataclass
class HttpCohort:
    """The hospitals of one cohort and the edge they talk to (swap `edge` to restart it)."""

    world: World
    edge: Edge
    round_: int = 0
    clients: dict[str, MaskingClient] = field(init=False)

    def __post_init__(self) -> None:
        cohort = CohortId(federation_id=FID, round=self.round_, edge_id=EID)
        check = enrolled_verifier(self.world)
        self.clients = {
            cid: MaskingClient(cohort, cid, sign=h.key.sign, verify=check, min_survivors=K)
            for cid, h in self.world.hospitals.items()
        }

    @property
    def bits(self) -> int:
        bits = self.world.public.ring_bits
        assert bits is not None
        return bits

    # -- requests -----------------------------------------------------------------------------------
    async def post(self, what: str, message: BaseModel, *, round_: int | None = None) -> httpx.Response:
        return await self.edge.http.post(
            masking_path(what, round_=self.round_ if round_ is None else round_),
            content=message.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )

    async def read(self, client_id: str, stage: Stage) -> httpx.Response:
        return await self.post(stage.value, self.clients[client_id].request(stage))

    async def read_ok(self, client_id: str, stage: Stage) -> Any:
        response = await self.read(client_id, stage)
        assert response.status_code == 200, response.text
        model: type[BaseModel] = {
            Stage.ROSTER: Roster,
            Stage.INBOX: Inbox,
            Stage.SURVIVORS: SurvivorSet,
            Stage.UNMASK_REQUEST: UnmaskRequest,
        }[stage]
        return model.model_validate_json(response.content)

    async def timeout(self) -> None:
        """Let the open stage's time run out, and the edge's tick close it."""
        self.world.clock.advance(STAGE_S)
        await self.edge.core.tick()

    # -- stages, in order ---------------------------------------------------------------------------
    async def advertise(self, ids: Iterable[str]) -> None:
        for cid in ids:
            response = await self.post("adverts", self.clients[cid].advertise())
            assert response.status_code == 202, response.text

    async def share(self, ids: Iterable[str]) -> None:
        for cid in ids:
            roster = await self.read_ok(cid, Stage.ROSTER)
            response = await self.post("shares", self.clients[cid].share(roster))
            assert response.status_code == 202, response.text

    def masked_ciphertext(self, cid: str, inbox: Inbox) -> bytes:
        public = self.world.public
        residues = public.residues(self.world.hospitals[cid].vector)
        masked = self.clients[cid].mask(inbox, residues, bits=self.bits)
        return public.serialize(public.encrypt_residues(masked))

    async def upload(self, ids: Iterable[str]) -> None:
        for cid in ids:
            inbox = await self.read_ok(cid, Stage.INBOX)
            update = self.world.update(
                self.world.hospitals[cid], round_=self.round_, ciphertext=self.masked_ciphertext(cid, inbox)
            )
            response = await self.edge.upload(update)
            assert response.status_code == 202, response.text

    async def consent(self, ids: Iterable[str]) -> None:
        for cid in ids:
            survivors = await self.read_ok(cid, Stage.SURVIVORS)
            response = await self.post("consents", self.clients[cid].consent(survivors))
            assert response.status_code == 202, response.text

    async def unmask(self, ids: Iterable[str]) -> None:
        for cid in ids:
            request = await self.read_ok(cid, Stage.UNMASK_REQUEST)
            response = await self.post("unmask-shares", self.clients[cid].unmask(request))
            assert response.status_code == 202, response.text


def cohort_sessions(
    world: World, plan: RoundPlan, edge: Peer, ids: Iterable[str]
) -> dict[str, CohortSession]:
    """The agent's `CohortSession` of each hospital in `ids`, talking to `edge`, checking its cohort against
    the keys the cloud would serve."""
    identities = IdentityKeys(edge_id=EID, keys={c: h.key.public_bytes for c, h in world.hospitals.items()})
    return {
        cid: CohortSession(
            plan,
            client_id=cid,
            edge_id=EID,
            key=world.hospitals[cid].key,
            identities=identities,
            edge=edge,
            min_survivors=K,
            wait_s=30.0,
        )
        for cid in ids
    }


async def join_upload_close(
    world: World, edge: Edge, sessions: dict[str, CohortSession], uploaders: Iterable[str]
) -> None:
    """Every session joins its cohort (before "training"); each of `uploaders` masks, encrypts and uploads
    its vector (the others drop before uploading); then the round's deadline passes and the edge closes it."""
    await asyncio.gather(*(session.join() for session in sessions.values()))
    for cid in uploaders:
        ciphertext = sessions[cid].seal(world.public, world.hospitals[cid].vector)
        response = await edge.upload(world.update(world.hospitals[cid], ciphertext=ciphertext))
        assert response.status_code == 202, response.text
    world.clock.advance(60)
    await edge.core.tick()


def unmasked_sum(secret: HEScheme[Any], aggregate: EdgeAggregate) -> npt.NDArray[np.float64]:
    """What the cloud does with a masking edge's aggregate: decrypt the residues, add the correction in the
    ring, decode the sum of `count` values (only the test holds the secret key)."""
    bits = secret.ring_bits
    assert bits is not None and aggregate.mask_correction is not None
    summed = secret.decrypt_residues(secret.deserialize(aggregate.ciphertext))
    fix = residues_from_bytes(aggregate.mask_correction, bits=bits, length=summed.size)
    unmasked = (summed + fix) & np.uint64((1 << bits) - 1)
    return secret.decode_residues(unmasked, count=aggregate.count)
