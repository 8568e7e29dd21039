"""Enrolment of edges and clients: their Ed25519 public keys, and one live API token each.

An identity is its public key. A first enrolment spends a single-use enrolment token issued for its id and
proves possession of its key by signing a challenge (`cloud_server.enrolment_tokens`); enrolling again
(a restarted edge, a hospital that lost its token) needs only that proof, under the enrolled key, and gets a
fresh API token, revoking the old one, and changes nothing else (an edge's URL is changed by an admin,
`set_edge_url`). Another key for a taken id is a conflict. Token, nonce and the federation's count of
edges or clients (its cap) are all decided in the transaction that writes the enrolment. The cloud keeps
only each token's SHA-256.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from pydantic import NonNegativeInt, TypeAdapter

from cloud_server.enrolment_tokens import Writes, admit, check_proof, consume_challenge
from cloud_server.errors import ConflictError, NotFoundError
from cloud_server.federations import FederationService
from cloud_server.records import FINAL_ROUND_STATES, RANKS, ClientStats, FederationRecord, TokenRecord
from protocol.ffa import initial_rank
from protocol.messages import (
    ClientEnrolment,
    ClientInfo,
    EdgeEnrolment,
    EdgeInfo,
    EdgeStint,
    Enrolled,
    ErrorCode,
    FederationSpec,
    Role,
    RoundPlan,
    RoundStatus,
)
from services import keyspace
from services.clock import TimeSource
from services.identity import new_token, token_digest
from services.store import FieldUpdates, HashField, StateStore, StoreError
from services.stored_records import (
    StoredRecordError,
    parse_record,
    read_hash_record,
    read_hash_records,
    read_record,
)

log = logging.getLogger("fedlora.cloud")

# How often an enrolment decides again because a round closed between its read and its write.
MAX_ROUND_RACES = 16
_COUNT = TypeAdapter(NonNegativeInt)  # an enrolled count, as stored


class _RoundMovedOnError(Exception):
    """The current round changed between an enrolment's read of it and its transaction."""


def _over(status: bytes | None, key: str | None) -> bool:
    if status is None or key is None:
        return True
    return parse_record(status, key=key, reader=RoundStatus).state in FINAL_ROUND_STATES


def check_same_hospital(existing: ClientInfo, request: ClientInfo) -> None:
    """Raise unless a re-enrolment is the enrolled hospital's: the same key, and the same noisy count."""
    cid = existing.client_id
    if existing.public_key != request.public_key:
        raise ConflictError(f"client {cid!r} is enrolled with another public key", field="public_key")
    if existing.num_examples != request.num_examples:
        # A hospital releases its noisy count once; another one means it drew again (its state folder
        # was lost), a second release of its data the federation would not see charged.
        raise ConflictError(
            f"client {cid!r} enrolled with {existing.num_examples} examples, not {request.num_examples}: a "
            "hospital's count is released once; restore its state folder",
            field="num_examples",
        )


def oldest_sum_round(spec: FederationSpec, round_: int) -> int:
    """The oldest round a sum the cloud takes while round `round_` is current may be for: `round_` itself,
    or with late uploads on a late bucket up to `late_uploads.max_staleness` rounds old."""
    return round_ - (spec.late_uploads.max_staleness if spec.late_uploads is not None else 0)


def placed(
    existing: ClientInfo, request: ClientInfo, *, round_: int | None, planned: bool, open_: bool, since: int
) -> ClientInfo:
    """The record a re-enrolment leaves: `request` (with the first enrolment's time) at the edge it names,
    at once unless round `round_` is open (`open_`) and the hospital was asked to join it (`planned`);
    then at the edge it has in round `round_`, moving after it, so that it is in that round through one
    edge only, the one whose cohort and plan it was counted in when the round opened. Naming its current
    edge again cancels a move.

    The edges it had before are kept (`edges_before`) for every round from `since` on, the oldest a sum or
    late bucket may still be for (`oldest_sum_round`), so that such a sum is checked against the edge the
    hospital had in its round however often it moved or re-enrolled since; a move at once ends the stint at
    the old edge with the last round it may have been counted in there (`round_` if planned, else the one
    before)."""
    now = existing.at_round(round_) if round_ is not None else existing
    before = [stint for stint in now.edges_before if stint.through_round >= since]
    # A re-enrolment rotates the API token and may move the hospital; its rank and cap stay as enrolled (the
    # spec and the rank policy change a rank, never a re-enrolment).
    kept = request.model_copy(
        update={
            "enrolled_at": existing.enrolled_at,
            "edges_before": before,
            "rank": existing.rank,
            "max_rank": existing.max_rank,
        }
    )
    if request.edge_id == now.edge_id or round_ is None:
        return kept
    if planned and open_:
        return kept.model_copy(
            update={"edge_id": now.edge_id, "moving_to": request.edge_id, "moving_after_round": round_}
        )
    through = round_ if planned else round_ - 1
    if through < since or (before and through <= before[-1].through_round):
        return kept  # no round the old edge may still send a sum for has the hospital there
    return kept.model_copy(
        update={"edges_before": [*before, EdgeStint(edge_id=now.edge_id, through_round=through)]}
    )


@dataclass(frozen=True)
class _Admission:
    """What one enrolment spends, decided in its transaction: its challenge's nonce always; for a new party
    also its enrolment token (bound to `role` and `subject`) and a place under the federation's `cap`."""

    fid: str
    role: Role
    subject: str
    enrolment_token: str | None
    request: EdgeEnrolment | ClientEnrolment
    cap: int
    now: datetime
    #: Seconds the enrolment's nonce may still be answered: its used mark lasts that long.
    nonce_left_s: float = 0.0
    #: The roster's size when the count was never written (a federation enrolled before it was kept);
    #: the first enrolment that passes writes the count, so racing ones still retry on it.
    uncounted: int = 0

    @property
    def _token_field(self) -> HashField | None:
        if self.enrolment_token is None:
            return None
        return keyspace.fed_enrolment_tokens(self.fid), token_digest(self.enrolment_token)

    @property
    def _challenge_key(self) -> str:
        return keyspace.fed_enrolment_challenge(self.fid, self.request.nonce or "")

    @property
    def _count_key(self) -> str:
        return keyspace.fed_enrolled_count(self.fid, self.role.value)

    @property
    def fields(self) -> list[HashField]:
        return [self._token_field] if self._token_field is not None else []

    @property
    def keys(self) -> list[str]:
        return [self._challenge_key, self._count_key]

    def writes(
        self, read: dict[HashField, bytes | None], current: dict[str, bytes | None], *, new: bool
    ) -> Writes:
        """The nonce used, and for a `new` party its token used and the count raised (refused past the cap)."""
        spent = dict(
            consume_challenge(current[self._challenge_key], self._challenge_key, lifetime_s=self.nonce_left_s)
        )
        if not new:
            return {}, spent
        field = self._token_field
        raw = read[field] if field is not None else None
        used = admit(raw, key=field, role=self.role, subject=self.subject, now=self.now)
        raw_count = current[self._count_key]
        count = (
            parse_record(raw_count, key=self._count_key, reader=_COUNT)
            if raw_count is not None
            else self.uncounted
        )
        if count >= self.cap:
            cap_name = "max_edges" if self.role is Role.EDGE else "max_clients"
            raise ConflictError(
                f"{self.fid!r} holds {count} {self.role.value}s, its {cap_name} {self.cap}: "
                f"{self.subject!r} cannot enrol",
                code=ErrorCode.FEDERATION_FULL,
                field="edge_id" if self.role is Role.EDGE else "client_id",
                detail={cap_name: self.cap},
            )
        return ({field: used} if field is not None else {}), {
            **spent,
            self._count_key: str(count + 1).encode(),
        }


class EnrolmentService:
    def __init__(self, store: StateStore, federations: FederationService, *, clock: TimeSource) -> None:
        self._store = store
        self._federations = federations
        self._clock = clock

    # -- enrolment ------------------------------------------------------------------------------------
    async def enrol_edge(
        self, fid: str, request: EdgeEnrolment, enrolment_token: str | None
    ) -> tuple[Enrolled, bool]:
        """(the answer, whether the edge is new)."""
        await self._federations.require_running(fid)
        spec = await self._federations.spec(fid)
        now = await self._clock()
        nonce_left_s = await check_proof(self._store, fid, request, now)
        info = EdgeInfo(
            edge_id=request.edge_id, url=request.url, public_key=request.public_key, enrolled_at=now
        )
        admission = _Admission(
            fid,
            Role.EDGE,
            request.edge_id,
            enrolment_token,
            request,
            spec.max_edges,
            now,
            nonce_left_s=nonce_left_s,
            uncounted=await self._uncounted(fid, Role.EDGE),
        )
        token = new_token()
        edge_field = (keyspace.fed_edges(fid), request.edge_id)
        created: list[bool] = []

        def write(read: dict[HashField, bytes | None], current: dict[str, bytes | None]) -> Writes:
            raw = read[edge_field]
            existing = (
                parse_record(raw, key=edge_field[0], reader=EdgeInfo, field=edge_field[1]) if raw else None
            )
            if existing is not None:
                if existing.public_key != request.public_key:
                    raise ConflictError(
                        f"edge {request.edge_id!r} is enrolled with another public key", field="public_key"
                    )
                if existing.url != request.url:
                    raise ConflictError(
                        f"edge {request.edge_id!r} is enrolled at {existing.url!r}, not {request.url!r}: a "
                        "re-enrolment changes no URL; an admin does (PUT /federations/{fid}/edges/{eid}/url)",
                        code=ErrorCode.EDGE_URL_CHANGED,
                        field="url",
                    )
            created[:] = [existing is None]
            fields, keys = admission.writes(read, current, new=existing is None)
            if existing is None:
                fields = {**fields, edge_field: info.model_dump_json().encode()}
            issued, pointer = self._with_token(
                fid, Role.EDGE, request.edge_id, token, fields, current=current, previous=previous
            )
            return issued, {**keys, **pointer}

        previous = await self._previous_token(fid, Role.EDGE, request.edge_id)
        await self._store.fields_transaction(
            [edge_field, self._token_field(fid, token), *admission.fields, *([previous] if previous else [])],
            write,
            keys=[keyspace.fed_subject_token(fid, Role.EDGE.value, request.edge_id), *admission.keys],
        )
        log.info(
            "edge enrolled" if created[0] else "edge re-enrolled",
            extra={"federation_id": fid, "edge_id": request.edge_id},
        )
        enrolled = Enrolled(federation_id=fid, subject=request.edge_id, role=Role.EDGE, api_token=token)
        return enrolled, created[0]

    async def set_edge_url(self, fid: str, edge_id: str, url: str) -> EdgeInfo:
        """An admin's change of an enrolled edge's URL (the one hospitals are sent to); 404 if not enrolled."""
        await self._federations.require_running(fid)
        edge_field = (keyspace.fed_edges(fid), edge_id)
        kept: list[EdgeInfo] = []

        def write(read: dict[HashField, bytes | None], _: dict[str, bytes | None]) -> Writes:
            raw = read[edge_field]
            if raw is None:
                raise NotFoundError(f"edge {edge_id!r} is not enrolled in {fid!r}", field="edge_id")
            edge = parse_record(raw, key=edge_field[0], reader=EdgeInfo, field=edge_field[1])
            kept[:] = [edge.model_copy(update={"url": url})]
            return {edge_field: kept[0].model_dump_json().encode()}, {}

        await self._store.fields_transaction([edge_field], write)
        log.warning("edge URL changed by an admin", extra={"federation_id": fid, "edge_id": edge_id})
        return kept[0]

    async def enrol_client(
        self, fid: str, request: ClientEnrolment, enrolment_token: str | None
    ) -> tuple[Enrolled, bool]:
        """(the answer, whether the client is new). A re-enrolment at another edge while a round the hospital
        was asked to join is open leaves the move pending until that round is over (`placed`)."""
        await self._federations.require_running(fid)
        spec = await self._federations.spec(fid)
        nonce_left_s = await check_proof(self._store, fid, request, await self._clock())
        edge = await self.edge(fid, request.edge_id)
        if edge is None:
            raise NotFoundError(f"edge {request.edge_id!r} is not enrolled in {fid!r}", field="edge_id")
        rank = initial_rank(
            spec.rank_policy, num_examples=request.num_examples, r_max=spec.r_max, max_rank=request.max_rank
        )
        info = ClientInfo(
            client_id=request.client_id,
            edge_id=request.edge_id,
            public_key=request.public_key,
            num_examples=request.num_examples,
            rank=rank,
            max_rank=min(request.max_rank or spec.r_max, spec.r_max),
            enrolled_at=await self._clock(),
        )
        admission = _Admission(
            fid,
            Role.CLIENT,
            request.client_id,
            enrolment_token,
            request,
            spec.max_clients,
            info.enrolled_at,
            nonce_left_s=nonce_left_s,
            uncounted=await self._uncounted(fid, Role.CLIENT),
        )
        token = new_token()
        for _ in range(MAX_ROUND_RACES):
            round_ = (await self._federations.record(fid)).current_round
            try:
                since = oldest_sum_round(spec, round_) if round_ is not None else 0
                created, kept = await self._write_client(
                    fid, info, token, admission, round_=round_, since=since
                )
                break
            except _RoundMovedOnError:
                continue  # a round closed meanwhile: decide again against the one open now
        else:
            raise StoreError(f"the rounds of {fid!r} moved on {MAX_ROUND_RACES} times during one enrolment")
        log.info(
            "client enrolled" if created else "client re-enrolled",
            extra={"federation_id": fid, "client_id": request.client_id, "edge_id": request.edge_id},
        )
        enrolled = Enrolled(
            federation_id=fid,
            subject=request.client_id,
            role=Role.CLIENT,
            api_token=token,
            edge_url=edge.url,
            moving_after_round=kept.moving_after_round,
        )
        return enrolled, created

    async def _write_client(
        self, fid: str, info: ClientInfo, token: str, admission: _Admission, *, round_: int | None, since: int
    ) -> tuple[bool, ClientInfo]:
        """Store `info` (placed against round `round_`, the current one, remembering its edges back to round
        `since`) with its token, in one transaction with the federation's record, the round's status and
        what `admission` spends: (whether the client is new, the record kept)."""
        cid = info.client_id
        planned = round_ is not None and cid in (await self._plan(fid, round_)).client_ranks
        client_field = (keyspace.fed_clients(fid), cid)
        state_key = keyspace.fed_state(fid)
        status_key = keyspace.fed_round_status(fid, round_) if round_ is not None else None
        kept: list[tuple[bool, ClientInfo]] = []

        def write(read: dict[HashField, bytes | None], current: dict[str, bytes | None]) -> Writes:
            record = parse_record(current[state_key] or b"", key=state_key, reader=FederationRecord)
            if record.current_round != round_:
                raise _RoundMovedOnError
            raw = read[client_field]
            if raw is None:
                kept[:] = [(True, info)]
            else:
                existing = parse_record(raw, key=client_field[0], reader=ClientInfo, field=cid)
                check_same_hospital(existing, info)
                status = current[status_key] if status_key is not None else None
                new = placed(
                    existing,
                    info,
                    round_=round_,
                    planned=planned,
                    open_=not _over(status, status_key),
                    since=since,
                )
                kept[:] = [(False, new)]
            fields, spent = admission.writes(read, current, new=raw is None)
            fields = {**fields, client_field: kept[0][1].model_dump_json().encode()}
            issued, pointer = self._with_token(
                fid, Role.CLIENT, cid, token, fields, current=current, previous=previous
            )
            return issued, {**spent, **pointer}

        keys = [
            state_key,
            *([status_key] if status_key else []),
            keyspace.fed_subject_token(fid, "client", cid),
            *admission.keys,
        ]
        previous = await self._previous_token(fid, Role.CLIENT, cid)
        await self._store.fields_transaction(
            [
                client_field,
                self._token_field(fid, token),
                *admission.fields,
                *([previous] if previous else []),
            ],
            write,
            keys=keys,
        )
        return kept[0]

    async def _plan(self, fid: str, round_: int) -> RoundPlan:
        plan = await read_record(self._store, keyspace.fed_round_plan(fid, round_), RoundPlan)
        if plan is None:
            raise StoreError(f"round {round_} of {fid!r} is current but has no plan")
        return plan

    async def _uncounted(self, fid: str, role: Role) -> int:
        """The edges or clients enrolled, counted from the roster, if the federation keeps no count yet."""
        if await self._store.get(keyspace.fed_enrolled_count(fid, role.value)) is not None:
            return 0
        roster = keyspace.fed_edges(fid) if role is Role.EDGE else keyspace.fed_clients(fid)
        return len(await self._store.hgetall(roster))

    @staticmethod
    def _token_field(fid: str, token: str) -> HashField:
        return keyspace.fed_tokens(fid), token_digest(token)

    def _with_token(
        self,
        fid: str,
        role: Role,
        subject: str,
        token: str,
        fields: FieldUpdates,
        *,
        current: dict[str, bytes | None],
        previous: HashField | None,
    ) -> Writes:
        """`fields` with the writes that issue `token` to `subject`: its record under its digest, and the
        subject's pointer, which decides which of its tokens is live (moving it revokes the previous one).
        The previous token's record (`previous`, read before the transaction) goes too while the pointer
        (in `current`) still names it, so that re-enrolling in a loop leaves no record behind."""
        field = self._token_field(fid, token)
        pointer = keyspace.fed_subject_token(fid, role.value, subject)
        writes: dict[HashField, bytes | None] = {
            **fields,
            field: TokenRecord(role=role, subject=subject).dump(),
        }
        if previous is not None and current.get(pointer) == previous[1].encode():
            writes[previous] = None
        return writes, {pointer: field[1].encode()}

    async def _previous_token(self, fid: str, role: Role, subject: str) -> HashField | None:
        """The record field of `subject`'s live API token, if it has one."""
        digest = await self._store.get(keyspace.fed_subject_token(fid, role.value, subject))
        return (keyspace.fed_tokens(fid), digest.decode()) if digest else None

    async def token_subject(self, fid: str, digest: str) -> TokenRecord | None:
        """Who a live API token stands for, or None (unknown or revoked)."""
        try:
            record = await read_hash_record(self._store, keyspace.fed_tokens(fid), digest, TokenRecord)
        except StoredRecordError as e:
            # A record no enrolment writes (an admin role, a foreign write into the store): quarantined by the
            # read, it authorises nothing (401), and the log names the field at fault, never the token.
            log.warning(
                "a stored token record does not validate; it authorises nothing: %s",
                e,
                extra={"federation_id": fid},
            )
            return None
        if record is None:
            return None
        live = await self._store.get(keyspace.fed_subject_token(fid, record.role.value, record.subject))
        return record if live == digest.encode() else None

    # -- rosters --------------------------------------------------------------------------------------
    async def edge(self, fid: str, edge_id: str) -> EdgeInfo | None:
        return await read_hash_record(self._store, keyspace.fed_edges(fid), edge_id, EdgeInfo)

    async def edges(self, fid: str) -> list[EdgeInfo]:
        await self._federations.spec(fid)
        # A list: an entry that does not read back is quarantined and left out, the others still show.
        edges = await read_hash_records(self._store, keyspace.fed_edges(fid), EdgeInfo, skip=True)
        return list(edges.values())

    async def clients(
        self, fid: str, *, edge_id: str | None = None, with_stats: bool = True, round_: int | None = None
    ) -> dict[str, ClientInfo]:
        """Enrolled clients by id as of round `round_` (default: the current one; `ClientInfo.at_round`), at
        `edge_id` only if given, with their participation when `with_stats`."""
        await self._federations.spec(fid)
        if round_ is None:
            round_ = (await self._federations.record(fid)).current_round
        clients = await read_hash_records(self._store, keyspace.fed_clients(fid), ClientInfo, skip=True)
        if round_ is not None:
            clients = {cid: info.at_round(round_) for cid, info in clients.items()}
        # Bookkeeping: ranks that do not read back are discarded, and the enrolled ranks hold.
        current = await read_record(self._store, keyspace.fed_ranks(fid), RANKS, bookkeeping=True)
        if current is not None:  # ranks the policy has grown since enrolment
            for cid, rank in current.items():
                if cid in clients:
                    clients[cid] = clients[cid].model_copy(update={"rank": rank})
        if edge_id is not None:
            clients = {cid: c for cid, c in clients.items() if c.edge_id == edge_id}
        if with_stats:
            for cid, client in clients.items():
                key = keyspace.fed_client_stats(fid, cid)
                stats = await read_record(self._store, key, ClientStats, bookkeeping=True)
                if stats is not None:
                    clients[cid] = client.model_copy(update=stats.model_dump())
        return clients
