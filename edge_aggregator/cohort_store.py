"""What the edge keeps of a masking cohort in the `StateStore`, so that a restart loses nothing accepted.

Per round (key names in `services.keyspace`, each expiring after `EDGE_ROUND_TTL_S` like the round's
other keys):
- `opened`: when the adverts stage opened (SET NX), so a restarted edge keeps counting its timeout;
- per stage (`Collected`): each hospital's message, written once, and the list of hospitals the edge
  holds one from, written in the same transaction, which also reads the stage's `closed` marker. No
  message joins a stage after the marker, so what is read after it is final;
- `closed` per stage: when it closed (SET NX);
- a claim per advertised X25519 key, in the advert's transaction: two adverts never share a key (an
  honest hospital refuses such a roster, so one copied key would stop the whole cohort);
- `correction`: the residues that remove the cohort's masks (SET NX); `failed`: why the cohort cannot
  unmask (SET NX).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

from edge_aggregator.errors import DuplicateUploadError, KeyInUseError, StageClosedError
from protocol.messages import Identifier
from services import keyspace
from services.store import StateStore
from services.stored_records import StoredRecordError, parse_record, read_record

M = TypeVar("M", bound=BaseModel)

TTL_S = keyspace.EDGE_ROUND_TTL_S


class Collected(StrEnum):
    """The stages at which the edge collects one message per hospital, in order."""

    ADVERTS = "adverts"
    SHARES = "shares"
    CONSENTS = "consents"
    ANSWERS = "answers"


class Moment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    at: datetime


class CohortFailure(BaseModel):
    """Why a cohort cannot unmask, and at which stage: nothing of its round is forwarded."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    stage: str
    reason: str
    at: datetime


class CohortStore:
    """The masking cohorts of one edge and federation, one per round."""

    def __init__(self, store: StateStore, *, edge_id: str, federation_id: str) -> None:
        self._store = store
        self._eid = edge_id
        self._fid = federation_id

    # -- stage times --------------------------------------------------------------------------------
    async def open(self, round_: int, now: datetime) -> datetime:
        """When round `round_`'s adverts stage opened: now, unless it opened before."""
        key = keyspace.edge_masking_opened(self._eid, self._fid, round_)
        if await self._store.set_if_absent(key, Moment(at=now).model_dump_json().encode(), ttl_s=TTL_S):
            return now
        opened = await read_record(self._store, key, Moment)
        return opened.at if opened is not None else now

    async def close(self, round_: int, stage: Collected, now: datetime) -> datetime:
        """Close `stage` to messages (once); when it closed."""
        key = keyspace.edge_masking_closed(self._eid, self._fid, round_, stage.value)
        await self._store.set_if_absent(key, Moment(at=now).model_dump_json().encode(), ttl_s=TTL_S)
        # The list is final now (every write of it checked the marker): give it its lifetime.
        senders = keyspace.edge_masking_senders(self._eid, self._fid, round_, stage.value)
        listed = await self._store.get(senders)
        if listed is not None:
            await self._store.set(senders, listed, ttl_s=TTL_S)
        closed = await self.closed(round_, stage)
        return closed if closed is not None else now

    async def closed(self, round_: int, stage: Collected) -> datetime | None:
        key = keyspace.edge_masking_closed(self._eid, self._fid, round_, stage.value)
        closed = await read_record(self._store, key, Moment)
        return closed.at if closed is not None else None

    async def closures(self, round_: int) -> dict[Collected, datetime]:
        found = {stage: await self.closed(round_, stage) for stage in Collected}
        return {stage: at for stage, at in found.items() if at is not None}

    # -- messages -----------------------------------------------------------------------------------
    async def put(
        self, round_: int, stage: Collected, client_id: str, message: bytes, *, claims: Sequence[str] = ()
    ) -> int:
        """Store `client_id`'s message for `stage`, with `claims` (keys only this hospital may hold);
        the number of hospitals the stage holds a message from. The same message again changes nothing;
        another one raises `DuplicateUploadError`, one after the stage closed `StageClosedError`, a claim
        another hospital holds `KeyInUseError`; nothing is written then."""
        k_message = keyspace.edge_masking_message(self._eid, self._fid, round_, stage.value, client_id)
        k_senders = keyspace.edge_masking_senders(self._eid, self._fid, round_, stage.value)
        k_closed = keyspace.edge_masking_closed(self._eid, self._fid, round_, stage.value)
        owner = client_id.encode()
        counted = 0

        def compute(current: dict[str, bytes | None]) -> dict[str, bytes | None]:
            nonlocal counted
            senders = _names(current[k_senders], key=k_senders)
            counted = len(senders)
            held = current[k_message]
            if held is not None:
                if held == message:
                    return {}
                raise DuplicateUploadError(
                    f"{client_id} already sent another {stage.value} message to round {round_}'s cohort"
                )
            if current[k_closed] is not None:
                raise StageClosedError(f"round {round_}'s {stage.value} stage has closed")
            for claim in claims:
                if current[claim] not in (None, owner):
                    raise KeyInUseError(f"another hospital of round {round_}'s cohort advertised this key")
            counted += 1
            listed = json.dumps(sorted([*senders, client_id])).encode()
            return {k_message: message, k_senders: listed, **dict.fromkeys(claims, owner)}

        written = await self._store.transaction([k_message, k_senders, k_closed, *claims], compute)
        # Transactions write without a lifetime; these keys never change again (losing this only keeps them).
        for key in (k_message, *claims):
            if key in written:
                await self._store.set(key, message if key == k_message else owner, ttl_s=TTL_S)
        return counted

    def key_claim(self, round_: int, public_key: bytes) -> str:
        return keyspace.edge_masking_key_claim(self._eid, self._fid, round_, public_key.hex())

    async def senders(self, round_: int, stage: Collected) -> list[str]:
        """The hospitals whose message for `stage` the edge holds, sorted."""
        key = keyspace.edge_masking_senders(self._eid, self._fid, round_, stage.value)
        return await read_record(self._store, key, _NAMES) or []

    async def messages(self, round_: int, stage: Collected, reader: type[M]) -> dict[str, M]:
        """Every message held for `stage`, by hospital, parsed by `reader` (final once the stage closed). One
        that does not read back is quarantined and left out: its hospital counts as a dropout of the stage."""
        out = {}
        for client_id in await self.senders(round_, stage):
            key = keyspace.edge_masking_message(self._eid, self._fid, round_, stage.value, client_id)
            with contextlib.suppress(StoredRecordError):
                message = await read_record(self._store, key, reader)
                if message is not None:
                    out[client_id] = message
        return out

    # -- outcome ------------------------------------------------------------------------------------
    async def fail(self, round_: int, failure: CohortFailure) -> CohortFailure:
        """Record why the cohort failed (once) and close every stage; the failure in force."""
        key = keyspace.edge_masking_failed(self._eid, self._fid, round_)
        await self._store.set_if_absent(key, failure.model_dump_json().encode(), ttl_s=TTL_S)
        for stage in Collected:
            await self.close(round_, stage, failure.at)
        return await self.failure(round_) or failure

    async def failure(self, round_: int) -> CohortFailure | None:
        return await read_record(
            self._store, keyspace.edge_masking_failed(self._eid, self._fid, round_), CohortFailure
        )

    async def save_correction(self, round_: int, data: bytes) -> bytes:
        """Keep the correction (once); the one in force."""
        key = keyspace.edge_masking_correction(self._eid, self._fid, round_)
        await self._store.set_if_absent(key, data, ttl_s=TTL_S)
        return await self.correction(round_) or data

    async def correction(self, round_: int) -> bytes | None:
        return await self._store.get(keyspace.edge_masking_correction(self._eid, self._fid, round_))


_NAMES = TypeAdapter(list[Identifier])


def _names(raw: bytes | None, *, key: str) -> list[str]:
    return parse_record(raw, key=key, reader=_NAMES) if raw is not None else []
