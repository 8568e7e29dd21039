"""The round state machine: start, accept edge aggregates, close (or fail) rounds, publish the next plan.

    open --first aggregate--> collecting --every expected edge, or deadline with >= 1--> aggregating
         --> closed (adapter v+1 stored, next round opened or federation completed)
         --> failed (deadline with no aggregate, or the sum did not decrypt; next round reopens from v)

Only `open`, `closed` and `failed` are stored; `collecting` and `aggregating` are read from the stored
aggregates, the round's seal and the closing lease. A round is sealed before its aggregates are read to close
or fail it; from then on `receive` refuses a new sum for it (409 `round_closed`), so a 202 on an aggregate
means it is in the sums the round closes with. Everything that matters is in the store, so a restarted cloud's first
`tick` finishes whatever round a previous process left (see `closing.py` for how a close happens once).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from cloud_server.close_attempts import ClosePolicy, close_failures
from cloud_server.closing import RoundCloser, read_digests, stored_digests
from cloud_server.enrolment import EnrolmentService
from cloud_server.errors import BadRequestError, ConflictError, NotFoundError
from cloud_server.federations import FederationService
from cloud_server.plans import PlanBoard, open_round, signed, wait_for, with_progress
from cloud_server.records import (
    COUNTED,
    FINAL_ROUND_STATES,
    FederationRecord,
    ForwardMark,
    ciphertext_digest,
    dump_forwards,
    forward_mark,
    pack_aggregate,
    read_forwards,
    unpack_aggregate,
)
from cloud_server.retention import Retention
from cloud_server.sum_checks import SumChecks
from cloud_server.telemetry import CloudTelemetry
from protocol.acceptance import (
    CountedElsewhereError,
    CountedTwiceError,
    CountMismatchError,
    ReplayedCiphertextError,
    Sum,
    check_count,
    check_not_counted,
    claim,
)
from protocol.crypto import CiphertextError, EncryptedVector
from protocol.messages import (
    EdgeAggregate,
    ErrorCode,
    FederationInfo,
    FederationState,
    Role,
    RoundPlan,
    RoundState,
    RoundStatus,
)
from protocol.privacy_planning import first_round_overspend
from protocol.secagg import SecAggError, residues_from_bytes
from services import keyspace
from services.clock import TimeSource
from services.errors import FederationEndedError
from services.store import StateStore, Updates
from services.stored_records import StoredRecordError, parse_record, read_record, report

log = logging.getLogger("fedlora.cloud")


def counted_twice(error: CountedTwiceError) -> ConflictError:
    """409 for a hospital already counted for its round: `client_counted_elsewhere` where another edge
    counted it (a masked or encrypted sum cannot drop one hospital, so the whole sum is refused and its edge
    forwards again without it), `duplicate_upload` where this edge did."""
    code = (
        ErrorCode.CLIENT_COUNTED_ELSEWHERE
        if isinstance(error, CountedElsewhereError)
        else ErrorCode.DUPLICATE_UPLOAD
    )
    return ConflictError(str(error), code=code, field=error.field, detail=error.detail)


def _digests_key(key: str) -> bool:
    """Whether `key` is a round's `fed_round_aggregate_digests`."""
    return key.startswith("cloud:") and key.endswith(":aggregate-digests")


def _mark(value: bytes) -> ForwardMark:
    """The mark of a stored aggregate value (`keyspace.fed_round_forwards`)."""
    header, _ = unpack_aggregate(value)
    return forward_mark(header)


class RoundService:
    def __init__(
        self,
        store: StateStore,
        federations: FederationService,
        enrolment: EnrolmentService,
        board: PlanBoard,
        *,
        clock: TimeSource,
        long_poll_s: float,
        telemetry: CloudTelemetry,
        retention: Retention,
        closing: ClosePolicy,
    ) -> None:
        self._store = store
        self._federations = federations
        self._enrolment = enrolment
        self._board = board
        self._clock = clock
        self._long_poll_s = long_poll_s
        self._checks = SumChecks(store, federations, enrolment)
        self._closer = RoundCloser(
            store,
            federations,
            enrolment,
            board,
            telemetry=telemetry,
            retention=retention,
            policy=closing,
            checks=self._checks,
        )

    async def stop(self, fid: str) -> FederationInfo:
        """Stop `fid` for good. Its open round is sealed first and failed with the sums it holds, in the
        transaction that stops the federation (`RoundCloser.stop`; if that round closes meanwhile, the one
        opened after it); an edge forwarding meanwhile is refused (409 `round_closed`), never acknowledged
        into the failed round. 409 if it has already ended."""
        record = await self._federations.record(fid)
        running = record.state in (FederationState.ACTIVE, FederationState.PAUSED)
        if running and await self._closer.stop(fid, await self._clock()):
            self._board.publish(fid)
            log.info("federation stopped", extra={"federation_id": fid})
            return await self._federations.info(fid)
        return await self._federations.stop(fid)

    # -- reading --------------------------------------------------------------------------------------
    async def plan(self, fid: str, round_: int) -> RoundPlan:
        return await self._checks.plan(fid, round_)

    async def _stored_status(self, fid: str, round_: int) -> RoundStatus:
        status = await read_record(self._store, keyspace.fed_round_status(fid, round_), RoundStatus)
        if status is None:
            await self._federations.spec(fid)
            raise NotFoundError(f"round {round_} of {fid!r} has not opened", field="round")
        return status

    async def status(self, fid: str, round_: int) -> RoundStatus:
        status = await self._stored_status(fid, round_)
        if status.state in FINAL_ROUND_STATES:
            return status
        # The forwards' marks, not the stored sums: a status never loads a ciphertext.
        forwards_key = keyspace.fed_round_forwards(fid, round_)
        forwarded = read_forwards(await self._store.get(forwards_key), key=forwards_key)
        if await self._store.get(keyspace.fed_round_sealed(fid, round_)) is not None:
            state = RoundState.AGGREGATING
        else:
            state = RoundState.COLLECTING if forwarded else RoundState.OPEN
        update: dict[str, object] = {"state": state}
        failures = await close_failures(self._store, fid, round_)
        if failures is not None:  # closing it failed: retrying, after a back-off
            update |= {"close_attempts": failures.tries, "close_error": failures.last_error}
        return with_progress(status, forwarded).model_copy(update=update)

    async def statuses(self, fid: str, *, offset: int, limit: int) -> tuple[list[RoundStatus], int]:
        """A page of rounds, newest first, and how many rounds have opened so far (ids 0 to that - 1)."""
        current = (await self._federations.record(fid)).current_round
        if current is None:
            return [], 0
        newest = current - offset
        page = [await self.status(fid, n) for n in range(newest, max(newest - limit, -1), -1)]
        return page, current + 1

    async def current_plan(self, fid: str, after_round: int) -> RoundPlan | None:
        """The current round's plan if its round is after `after_round` (None while paused). 410 once ended."""
        record = await self._federations.require_running(fid)
        if record.state is FederationState.PAUSED or record.current_round is None:
            return None
        if record.current_round <= after_round:
            return None
        return await self.plan(fid, record.current_round)

    async def view(self, fid: str, plan: RoundPlan, edge_id: str) -> RoundPlan:
        """Edge `edge_id`'s view of the stored plan `plan` (`SumChecks.view`)."""
        return await self._checks.view(fid, plan, edge_id)

    async def plan_for(self, fid: str, plan: RoundPlan, *, role: Role, subject: str) -> RoundPlan:
        """The stored plan `plan` as a party reads it: whole for the admin; signed as its edge's view for an
        edge and for a hospital (the edge it is planned at, or the edge it has in the round if it is not
        planned), so that neither learns another edge's hospitals (issue 20, item 3)."""
        if role is Role.ADMIN:
            return plan
        edge_id = subject if role is Role.EDGE else (plan.client_edges or {}).get(subject)
        if edge_id is None:
            clients = await self._enrolment.clients(fid, with_stats=False, round_=plan.round)
            if subject not in clients:
                raise NotFoundError(f"no hospital {subject!r} is enrolled in {fid!r}", field="client_id")
            edge_id = clients[subject].edge_id
        return signed(await self.view(fid, plan, edge_id), await self._federations.plan_signer(fid))

    async def wait_for_plan(
        self,
        fid: str,
        after_round: int,
        *,
        wait_s: float,
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> RoundPlan | None:
        """A plan after `after_round`, waiting up to `wait_s` (capped at `long_poll_s`) or until `gone()`
        returns (the poll's client disconnected)."""
        return await wait_for(
            self._board,
            fid,
            lambda: self.current_plan(fid, after_round),
            wait_s=min(wait_s, self._long_poll_s),
            gone=gone,
        )

    # -- start ----------------------------------------------------------------------------------------
    async def start(self, fid: str) -> RoundPlan:
        spec = await self._federations.spec(fid)
        record = await self._federations.require_running(fid)
        clients = await self._enrolment.clients(fid, with_stats=False, round_=0)
        now = await self._clock()
        plan, status = open_round(
            spec,
            round_=0,
            adapter_version=record.adapter_version,
            layout_digest=record.layout_digest,
            clients=clients,
            now=now,
            rounds_closed=record.rounds_closed,
            vector_sha256=await self._federations.adapter_sha256(fid, record.adapter_version),
            basis_sha256=await self._federations.basis_sha256(fid, record.basis(spec)),
        )
        # The cloud holds every edge sum it receives, released or not: a first round that could pass the
        # budget must not be planned at all.
        overspend = first_round_overspend(
            spec,
            layout_size=record.layout_size,
            shares_planned=plan.noise_share.clients if plan.noise_share is not None else None,
        )
        if overspend is not None:
            raise ConflictError(overspend, field="central_dp.epsilon_budget")
        plan = signed(plan, await self._federations.plan_signer(fid))
        record_key = keyspace.fed_state(fid)

        def begin(current: dict[str, bytes | None]) -> Updates:
            latest = parse_record(current[record_key] or b"", key=record_key, reader=FederationRecord)
            if latest.current_round is not None:
                raise ConflictError(
                    f"federation {fid!r} has already started; round {latest.current_round} is current",
                    detail={"current_round": latest.current_round},
                )
            if latest.state is not FederationState.ACTIVE:
                raise ConflictError(
                    f"federation {fid!r} is {latest.state.value}", detail={"state": latest.state}
                )
            if not clients:
                raise ConflictError(f"no client has enrolled in {fid!r} yet")
            return {
                record_key: latest.model_copy(update={"current_round": 0}).dump(),
                keyspace.fed_round_plan(fid, 0): plan.model_dump_json().encode(),
                keyspace.fed_round_status(fid, 0): status.model_dump_json().encode(),
            }

        await self._store.transaction(
            [record_key, keyspace.fed_round_plan(fid, 0), keyspace.fed_round_status(fid, 0)], begin
        )
        self._board.publish(fid)
        log.info("round opened", extra={"federation_id": fid, "round": 0, "data": {"clients": len(clients)}})
        return plan

    # -- aggregates -----------------------------------------------------------------------------------
    async def receive(
        self, fid: str, round_: int, agg: EdgeAggregate, *, edge_id: str
    ) -> tuple[RoundStatus, bool]:
        """Accept an edge's signed sum: (the round's status, whether this call stored it)."""
        await self._checks.signed(fid, round_, agg, edge_id=edge_id)
        held = await self._forwarded(fid, round_, edge_id)
        if held is not None:
            return await self._repeated(fid, round_, held, agg), False
        try:
            return await self._check_and_store(fid, round_, agg, edge_id=edge_id)
        except (ConflictError, FederationEndedError):
            # Another request of the edge (a retry, another replica of it forwarding the same sum) may have
            # been stored since the check above, and have closed the round: this one then finds its hospitals
            # counted or the round over. Answered as a repeat, so that the edge does not take them out of the
            # sum the cloud holds, or carry that sum on.
            held = await self._forwarded(fid, round_, edge_id)
            if held is None:
                raise
            return await self._repeated(fid, round_, held, agg), False

    async def _forwarded(self, fid: str, round_: int, edge_id: str) -> ForwardMark | None:
        """The mark of the sum `edge_id` forwarded for the round, if the cloud holds or held one. The sum may
        have been taken and have expired since (retention): its mark is kept for good, so a retried forward
        whose answer was lost is known as the same sum, in a stopped federation too."""
        existing = await self._store.hget(keyspace.fed_round_aggregates(fid, round_), edge_id)
        if existing is not None:
            return _mark(existing)
        forwards_key = keyspace.fed_round_forwards(fid, round_)
        return read_forwards(await self._store.get(forwards_key), key=forwards_key).get(edge_id)

    async def _check_and_store(
        self, fid: str, round_: int, agg: EdgeAggregate, *, edge_id: str
    ) -> tuple[RoundStatus, bool]:
        """Check a sum the edge has not forwarded before against the round, then store it once."""
        record = await self._federations.require_running(fid)
        self._check_round(fid, record, round_)
        if (await self._stored_status(fid, round_)).state in FINAL_ROUND_STATES:
            raise ConflictError(
                f"round {round_} of {fid!r} is over", code=ErrorCode.ROUND_CLOSED, field="round"
            )
        if await self._store.get(keyspace.fed_round_sealed(fid, round_)) is not None:
            raise self._sealed(fid, round_)
        spec = await self._federations.spec(fid)
        plan = await self._checks.made_under_plan(fid, agg)
        await self._check_not_counted(fid, agg)
        await self._checks.manifests(fid, agg, plan=plan, spec=spec)
        digests = [await self._check_ciphertext(fid, agg.ciphertext, count=agg.count, field="ciphertext")]
        await self._check_mask_correction(fid, agg)
        for index, bucket in enumerate(agg.late):
            digests.append(
                await self._check_ciphertext(
                    fid, bucket.ciphertext, count=bucket.count, field=f"late.{index}.ciphertext"
                )
            )

        now = await self._clock()
        if not await self._store_once(fid, agg, pack_aggregate(agg, received_at=now), digests):
            # Another request of the same edge stored its aggregate between our check and here.
            stored = await self._store.hget(keyspace.fed_round_aggregates(fid, round_), edge_id)
            return await self._repeated(fid, round_, _mark(stored or b""), agg), False
        log.info(
            "edge aggregate accepted",
            extra={"federation_id": fid, "round": round_, "edge_id": edge_id, "data": {"clients": agg.count}},
        )
        try:
            await self.advance(fid, now)
        except Exception:
            # The aggregate is stored: the deadline check closes the round once it can.
            log.exception("closing the round failed", extra={"federation_id": fid, "round": round_})
        return await self.status(fid, round_), True

    async def _check_not_counted(self, fid: str, agg: EdgeAggregate) -> None:
        """Refuse early (409 `client_counted_elsewhere` or `duplicate_upload`) a sum naming a hospital already
        counted for its round; `_store_once` checks it again atomically with the store."""
        parts = [("contributions", agg.round, agg.contributions)]
        parts += [
            (f"late.{i}.contributions", b.origin_round, b.contributions) for i, b in enumerate(agg.late)
        ]
        for field, origin, contributions in parts:
            counted = await read_record(self._store, keyspace.fed_round_counted(fid, origin), COUNTED) or {}
            try:
                check_not_counted(
                    tuple(c.client_id for c in contributions),
                    origin_round=origin,
                    edge_id=agg.edge_id,
                    counted=counted,
                    field=field,
                )
            except CountedTwiceError as e:
                raise counted_twice(e) from e

    @staticmethod
    def _sealed(fid: str, round_: int) -> ConflictError:
        return ConflictError(
            f"round {round_} of {fid!r} is being closed: its aggregates were sealed and it takes no more",
            code=ErrorCode.ROUND_CLOSED,
            field="round",
            detail={"sealed": True},
        )

    @staticmethod
    def _check_round(fid: str, record: FederationRecord, round_: int) -> None:
        current = record.current_round
        if current is None:
            raise ConflictError(
                f"federation {fid!r} has not started", code=ErrorCode.WRONG_ROUND, field="round"
            )
        if round_ > current:
            raise ConflictError(
                f"round {round_} has not opened; the current round is {current}",
                code=ErrorCode.WRONG_ROUND,
                field="round",
                detail={"current_round": current},
            )
        if round_ < current:
            raise ConflictError(
                f"round {round_} is over; the current round is {current}",
                code=ErrorCode.ROUND_CLOSED,
                field="round",
                detail={"current_round": current},
            )

    async def _check_ciphertext(self, fid: str, ciphertext: bytes, *, count: int, field: str) -> str:
        """Raise unless `ciphertext` parses under the federation's key and counts `count` encryptions; its
        canonical digest: SHA-256 of what it parses to, serialised again, so that the same ciphertext in
        other bytes (an unknown protobuf field in a CKKS chunk) is the same entry of the replay registry."""
        scheme = await self._federations.public_scheme(fid)
        layout, _ = await self._federations.layout(fid)

        def canonical() -> tuple[EncryptedVector[Any], bytes]:
            parsed = scheme.deserialize(ciphertext, expected_length=layout.size)
            return parsed, scheme.serialize(parsed)

        try:
            parsed, again = await asyncio.to_thread(canonical)
        except CiphertextError as e:
            raise BadRequestError(str(e), code=ErrorCode.BAD_CIPHERTEXT, field=field) from e
        # The count in the envelope is the edge's own bookkeeping, so this is a consistency check, not a proof
        # (protocol.acceptance says what it stops and what it does not).
        try:
            check_count(parsed.count, named=count, field=field)
        except CountMismatchError as e:
            raise BadRequestError(
                str(e), code=ErrorCode.BAD_CIPHERTEXT, field=e.field, detail=e.detail
            ) from e
        return ciphertext_digest(again)

    async def _check_mask_correction(self, fid: str, agg: EdgeAggregate) -> None:
        """A masking federation's sum comes with the residues that remove its cohort's masks; any other
        federation's comes without."""
        scheme = await self._federations.public_scheme(fid)
        bits = scheme.ring_bits
        if bits is None:
            if agg.mask_correction is not None:
                raise BadRequestError(
                    "this federation does not mask uploads; the aggregate carries a mask correction",
                    code=ErrorCode.BAD_CIPHERTEXT,
                    field="mask_correction",
                )
            return
        if agg.mask_correction is None:
            raise BadRequestError(
                "this federation masks uploads: an aggregate needs the mask correction of its cohort",
                code=ErrorCode.BAD_CIPHERTEXT,
                field="mask_correction",
            )
        layout, _ = await self._federations.layout(fid)
        try:
            residues_from_bytes(agg.mask_correction, bits=bits, length=layout.size)
        except SecAggError as e:
            raise BadRequestError(
                f"mask correction: {e}", code=ErrorCode.BAD_CIPHERTEXT, field="mask_correction"
            ) from e

    async def _store_once(self, fid: str, agg: EdgeAggregate, value: bytes, digests: Sequence[str]) -> bool:
        """Store `value` (the packed `agg`) unless its edge already forwarded for the round (False), in one
        atomic step with its claims: each ciphertext's canonical digest (`digests`: the round's own sum, then
        each late bucket's), each hospital's upload digest (from its signed line), its hospitals for their
        rounds, the value's digest among the round's (`keyspace.fed_round_aggregate_digests`) and its mark
        among the round's forwards (`keyspace.fed_round_forwards`). A claim taken before is 409 (`replay`,
        `duplicate_upload`), and so is a round sealed for closing (`round_closed`); nothing is written then:
        the sum that took it first stays whole."""
        sums = [
            Sum(
                "ciphertext",
                "contributions",
                agg.round,
                digests[0],
                tuple(c.client_id for c in agg.contributions),
                tuple(c.ciphertext_sha256 for c in agg.contributions),
            ),
            *(
                Sum(
                    f"late.{index}.ciphertext",
                    f"late.{index}.contributions",
                    bucket.origin_round,
                    digests[1 + index],
                    tuple(c.client_id for c in bucket.contributions),
                    tuple(c.ciphertext_sha256 for c in bucket.contributions),
                )
                for index, bucket in enumerate(agg.late)
            ),
        ]
        digest_keys = {
            digest: keyspace.fed_ciphertext(fid, digest)
            for s in sums
            for digest in (s.ciphertext_sha256, *s.upload_sha256)
        }
        counted_keys = {s.origin_round: keyspace.fed_round_counted(fid, s.origin_round) for s in sums}
        seal_key = keyspace.fed_round_sealed(fid, agg.round)
        stored_key = keyspace.fed_round_aggregate_digests(fid, agg.round)
        forwards_key = keyspace.fed_round_forwards(fid, agg.round)
        mark = _mark(value)

        def claims(current: dict[str, bytes | None]) -> Updates:
            if current[seal_key] is not None:
                raise self._sealed(fid, agg.round)
            held = read_digests(current[stored_key], key=stored_key) | stored_digests({agg.edge_id: value})
            counted: dict[int, dict[str, str]] = {}
            for r, key in counted_keys.items():
                raw = current[key]
                counted[r] = parse_record(raw, key=key, reader=COUNTED) if raw else {}
            try:
                claimed = claim(
                    sums,
                    edge_id=agg.edge_id,
                    accepted={digest: current[key] is not None for digest, key in digest_keys.items()},
                    counted=counted,
                )
            except ReplayedCiphertextError as e:
                raise ConflictError(str(e), code=ErrorCode.REPLAY, field=e.field, detail=e.detail) from e
            except CountedTwiceError as e:
                raise counted_twice(e) from e
            accepted_at = {"round": agg.round, "edge_id": agg.edge_id}
            return {
                **{
                    digest_keys[digest]: json.dumps(accepted_at | {"field": field}).encode()
                    for digest, field in claimed.digests.items()
                },
                **{
                    counted_keys[r]: json.dumps(ids, sort_keys=True).encode()
                    for r, ids in claimed.counted.items()
                },
                stored_key: json.dumps(held, sort_keys=True).encode(),
                forwards_key: dump_forwards(
                    read_forwards(current[forwards_key], key=forwards_key) | {agg.edge_id: mark}
                ),
            }

        return await self._store.hset_if_absent_with(
            keyspace.fed_round_aggregates(fid, agg.round),
            agg.edge_id,
            value,
            keys=[*digest_keys.values(), *counted_keys.values(), seal_key, stored_key, forwards_key],
            fn=claims,
        )

    async def _repeated(self, fid: str, round_: int, held: ForwardMark, agg: EdgeAggregate) -> RoundStatus:
        """The answer to a sum of an edge whose sum for the round the cloud holds or held (`held`): the same
        sum again (the digest of all it signed: manifest, nonces, every ciphertext) is taken, counted once,
        with the round's status (whatever the round or the federation became since); another, even under the
        same idempotency key and ciphertext, is 409 `duplicate_upload`. A mark kept before the signed digest
        was (`ForwardMark.signed_sha256` None) is matched by idempotency key and ciphertext digest."""
        same = (
            held.signed_sha256 == agg.signed_sha256
            if held.signed_sha256 is not None
            else held.idempotency_key == agg.idempotency_key
            and held.ciphertext_sha256 == ciphertext_digest(agg.ciphertext)
        )
        if same:
            return await self.status(fid, round_)
        raise ConflictError(
            f"edge {agg.edge_id!r} already forwarded another aggregate for round {round_}",
            code=ErrorCode.DUPLICATE_UPLOAD,
            detail={"idempotency_key": held.idempotency_key},
        )

    # -- deadlines ------------------------------------------------------------------------------------
    async def tick(self, now: datetime) -> None:
        """The deadline check: move every active federation's round on if it can be (also after a restart)."""
        for fid in await self._federations.ids():
            try:
                await self.advance(fid, now)
            except Exception as e:
                extra = {"federation_id": fid}
                if not await report(self._store, e, what="the deadline check", extra=extra):
                    log.exception("deadline check failed", extra=extra)
                elif isinstance(e, StoredRecordError) and _digests_key(e.key):
                    # Quarantined: without it the round holds no recorded sum, so the next check fails it
                    # (every stored sum is then unrecorded: quarantined, named in the failure) or closes it.
                    await self._store.delete(e.key)

    async def advance(self, fid: str, now: datetime) -> None:
        """Close the current round if every expected edge forwarded or its deadline passed; fail it if the
        deadline passed with nothing forwarded."""
        try:
            record = await self._federations.record(fid)
        except NotFoundError:
            return
        if record.state is not FederationState.ACTIVE or record.current_round is None:
            return
        round_ = record.current_round
        status = await self._stored_status(fid, round_)
        if status.state in FINAL_ROUND_STATES:
            return
        spec = await self._federations.spec(fid)
        digests_key = keyspace.fed_round_aggregate_digests(fid, round_)
        values = read_digests(await self._store.get(digests_key), key=digests_key)
        expected = {e.edge_id for e in status.edges if e.expected_clients > 0}
        deadline = status.opened_at + timedelta(seconds=spec.round_deadline_s)
        if values and expected <= values.keys():
            await self._closer.close(fid, round_, now, why="every expected edge forwarded")
        elif now >= deadline:
            if values:
                await self._closer.close(fid, round_, now, why="round deadline passed")
            else:
                await self._closer.expire(
                    fid,
                    round_,
                    now,
                    reason=f"round deadline {deadline.isoformat()} passed with no edge aggregate",
                )
