"""A hospital's part in its edge's masking cohort, over HTTP (`protocol.secagg` does the cryptography).

Before training: advertise keys, read the roster, send sealed shares, read the inbox (so the cohort is
fixed before anyone's data is touched). After training: mask the encoded update and encrypt it (the
upload itself goes the usual way), then sign the edge's survivor list and answer its unmask request.
A hospital that cannot finish a stage in time drops out of the cohort, which the protocol tolerates; it
never sends a share the rules of `MaskingClient` forbid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel

from protocol.crypto import HEScheme
from protocol.messages import ErrorCode, IdentityKeys, RoundPlan
from protocol.reach import published_rank
from protocol.secagg import (
    CohortId,
    Inbox,
    MaskingClient,
    Roster,
    SecAggError,
    Stage,
    SurvivorSet,
    UnmaskRequest,
)
from services.http import Peer, PeerRefusedError
from services.identity import SigningKey, verifier

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("client_agent")
_JSON = {"content-type": "application/json"}
#: How often a hospital asks for a stage that is still open (or a round its edge has not opened yet).
POLL_S = 0.5
_NOT_YET = (ErrorCode.STAGE_PENDING.value, ErrorCode.ROUND_NOT_OPEN_YET.value)
#: How long past its round's upload deadline a hospital waits for the edge's closing stages (survivors,
#: unmask request): the edge's stage timeouts, a few times over.
COHORT_GRACE_S = 180.0


class CohortTimeoutError(SecAggError):
    """A stage did not close before this hospital's wait for it ended: it drops out of the cohort."""


class CohortSession:
    """One hospital in one round's cohort at its edge."""

    def __init__(
        self,
        plan: RoundPlan,
        *,
        client_id: str,
        edge_id: str,
        key: SigningKey,
        identities: IdentityKeys,
        edge: Peer,
        min_survivors: int,
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cohort_id = CohortId(federation_id=plan.federation_id, round=plan.round, edge_id=edge_id)
        self._client = MaskingClient(
            self.cohort_id,
            client_id,
            sign=key.sign,
            verify=verifier(identities.keys.get),
            min_survivors=min_survivors,
        )
        self._plan = plan
        self._min_survivors = min_survivors
        self._edge = edge
        self._wait_s = wait_s
        self._clock = clock
        self._inbox: Inbox | None = None
        self._base = f"/federations/{plan.federation_id}/rounds/{plan.round}/masking"

    async def join(self) -> None:
        """Advertise, share and collect this hospital's inbox; raises `SecAggError` if the cohort is one it
        must not join (or does not form in time)."""
        await self._post("adverts", self._client.advertise())
        roster = await self._read(Stage.ROSTER, Roster)
        await self._post("shares", self._client.share(roster))
        self._inbox = await self._read(Stage.INBOX, Inbox)
        # Opened now, before any data is touched: an inbox that cannot be used makes this hospital sit the
        # round out here, not after training.
        self._client.receive(self._inbox)
        log.info(
            "joined the round's masking cohort",
            extra={
                "round": self.cohort_id.round,
                "data": {"cohort": len(roster.adverts), "neighbours_sharing": len(self._inbox.sealed)},
            },
        )

    def seal(self, scheme: HEScheme[Any], values: np.ndarray) -> bytes:
        """`values` encoded in the scheme's ring, masked, encrypted and serialised."""
        bits = scheme.ring_bits
        if bits is None or self._inbox is None:
            raise SecAggError("masking needs a scheme with an exact ring and a joined cohort")
        masked = self._client.mask(self._inbox, scheme.residues(values), bits=bits)
        return scheme.serialize(scheme.encrypt_residues(masked))

    async def finish(self) -> None:
        """Sign the edge's survivor list and reveal the shares it needs to unmask the survivors' sum."""
        survivors = await self._read(Stage.SURVIVORS, SurvivorSet)
        self._check_reach(survivors)
        await self._post("consents", self._client.consent(survivors))
        request = await self._read(Stage.UNMASK_REQUEST, UnmaskRequest)
        answer = self._client.unmask(request)
        await self._post("unmask-shares", answer)
        log.info(
            "answered the edge's unmask request",
            extra={
                "round": self.cohort_id.round,
                "data": {
                    "survivors": len(survivors.survivors),
                    "self_mask_shares": len(answer.seed_shares),
                    "mask_key_shares": len(answer.key_shares),
                },
            },
        )

    def _check_reach(self, survivor_set: SurvivorSet) -> None:
        """Raise `SecAggError` unless every column a survivor uploads under the plan (below its rank and the
        plan's published rank) is reached by `k` survivors: the edge names who dropped, and leaving out the
        other high-rank hospitals would leave one hospital's columns alone in the sum the cohort unmasks."""
        cap = self._plan.published_rank
        uploaded = [
            rank if cap is None else min(rank, cap)
            for rank in (self._plan.client_ranks.get(s, 0) for s in survivor_set.survivors)
        ]
        reached = published_rank(uploaded, k=self._min_survivors)
        if reached < max(uploaded, default=0):
            raise SecAggError(
                f"the survivor list reaches LoRA columns {reached} to {max(uploaded) - 1} with fewer than "
                f"{self._min_survivors} of its hospitals"
            )

    async def _post(self, what: str, message: BaseModel) -> None:
        await self._asking_again(what, message.model_dump_json().encode())

    async def _read(self, stage: Stage, model: type[M]) -> M:
        """What `stage` produced."""
        body = self._client.request(stage).model_dump_json().encode()
        return model.model_validate_json((await self._asking_again(stage.value, body)).content)

    async def _asking_again(self, what: str, body: bytes) -> httpx.Response:
        """POST `body` to the round's `what`, again while the edge answers that what it needs is not there
        yet, up to `wait_s`: `stage_pending` (the stage has not closed), `round_not_open_yet` (the edge has
        not fetched this round's plan yet: the hospital is ahead of it, not late)."""
        deadline = self._clock() + self._wait_s
        while True:
            try:
                return await self._edge.request("POST", f"{self._base}/{what}", content=body, headers=_JSON)
            except PeerRefusedError as e:
                if e.code not in _NOT_YET:
                    raise
                if self._clock() >= deadline:
                    raise CohortTimeoutError(
                        f"the edge's {what} for round {self.cohort_id.round} was still {e.code} after "
                        f"{self._wait_s:.0f} s"
                    ) from e
                await asyncio.sleep(POLL_S)
