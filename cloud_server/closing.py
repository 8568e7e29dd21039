"""Closing a round: sum the edges' aggregates, decrypt the total, store the next adapter and plan, once.

A round is closed by one store transaction that writes the new adapter, the closed status, the clients'
stats, the next plan and the federation record together, and only if the round is still open: two closers
(two requests, a request and the deadline check, or a restarted cloud) commit once. A fenced lease
(`services.lease`: a token per holder, `SET NX` with `CloudSettings.close_lease_ttl_s`) keeps a second closer
from redoing the decryption while the first works: the holder renews it every third of its TTL, releases it
only if it still holds its own token, and its commit (or `fail`) writes nothing unless the lease still
holds that token, so a closer that stalled past the TTL neither publishes nor frees its successor's lease.
If the holder dies, the lease lapses and the next deadline check finishes the round from the stored
aggregates. A close attempt that raises anything but a crypto error is counted in the store
(`close_attempts`) and retried after a doubling back-off; after `close_max_attempts` the round is failed
with the last error as its reason (a wrong KEK is not counted: it is not the round's fault); an attempt the
store refuses to count (Redis full) keeps the lease for its back-off instead. Before anyone reads
a round's aggregates to close or fail it, the round is sealed (`_seal`: one transaction that writes the seal
and reads which sums the round holds); `receive` stores no sum into a sealed round (409), and the commit
writes nothing unless the sums stored are exactly those it decrypted. The sums are read one edge at a time
and folded into a running sum (`stored_sums`), never all held at once, each first checked again as `receive`
checked it (`sum_checks`: a sum that fails is quarantined and never decrypted), and a packed Paillier total
is decrypted over `ClosePolicy.decrypt_workers` processes; a worker that dies is a failed attempt like any
other, retried from the stored sums, and when none can start the cloud decrypts in its own process. The central noise
comes from a seed written once per round (sealed under the KEK), so whichever closer commits, the global
update is the same one: a crash never produces two differently-noised views of the same sum.

`close` prepares a round (its noise, the budget check), decrypts it, and commits: what the commit writes is
decided by `round_outcome` from plain values; the transaction here only reads the keys, checks the round is
still its own, and lands the outcome on them (`CommitKeys`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from cloud_server.central_ledger import Ledger, entry_for
from cloud_server.close_attempts import (
    CloseFailures,
    ClosePolicy,
    KeyBackoff,
    close_failures,
    describe_error,
    record_failure,
)
from cloud_server.enrolment import EnrolmentService
from cloud_server.errors import NotFoundError
from cloud_server.federations import FederationService, vector_from_bytes
from cloud_server.plans import PlanBoard, failed_status, open_round, signed
from cloud_server.privacy_budget import overspend
from cloud_server.records import (
    DIGESTS,
    FINAL_ROUND_STATES,
    RANKS,
    VALIDATION,
    ClientStats,
    FederationRecord,
    StoredAggregate,
)
from cloud_server.retention import Retention
from cloud_server.round_outcome import Release, RoundOutcome, Stored, round_outcome, still_open
from cloud_server.stored_sums import StoredSums, read_sums
from cloud_server.sum_checks import SumChecks
from cloud_server.telemetry import CloudTelemetry
from protocol.aggregation import (
    Aggregated,
    LateGroup,
    RefusedSumsError,
    RoundNoise,
    aggregate,
    fold_in,
    round_noise,
)
from protocol.crypto import CryptoError, KeyBindingError, KeyStoreError, WorkersUnavailableError
from protocol.ffa import AdapterLayout, column_energy, seeded_bases
from protocol.messages import (
    Contribution,
    DropReason,
    FederationSpec,
    FederationState,
    RoundPlan,
    RoundStatus,
    schedule_multiplier,
)
from protocol.strategies import strategy_for
from services import keyspace
from services.identity import SigningKey
from services.lease import Lease, Pause
from services.store import StateStore, StoreError, Updates
from services.stored_records import Discards, parse_record, read_record

log = logging.getLogger("fedlora.cloud")


def late_groups(spec: FederationSpec, round_: int, sums: StoredSums) -> list[LateGroup]:
    """The late buckets of a round's stored aggregates, grouped by staleness (least late first); their
    ciphertexts are read from the store when the decryption reaches them."""
    if spec.late_uploads is None:
        return []
    by_staleness: dict[int, tuple[list[tuple[str, int]], list[Contribution], list[str]]] = {}
    for edge_id, header in sums.headers.items():
        for index, bucket in enumerate(header.late):
            parts, contributions, edges = by_staleness.setdefault(round_ - bucket.origin_round, ([], [], []))
            parts.append((edge_id, index))
            contributions.extend(bucket.contributions)
            edges.append(edge_id)
    return [
        LateGroup(s, spec.late_uploads.factor(s), sums.late(parts), contributions, edges)
        for s, (parts, contributions, edges) in sorted(by_staleness.items())
    ]


def _log_left_out(fid: str, round_: int, left_out: list[LateGroup]) -> None:
    log.warning(
        "late uploads left out: decrypted on their own they would hold back columns the round publishes",
        extra={
            "federation_id": fid,
            "round": round_,
            "data": {str(g.staleness): [c.client_id for c in g.contributions] for g in left_out},
        },
    )


def _named(why: Mapping[str, str]) -> str:
    """`field: why; ...` for the sums `why` names."""
    return "; ".join(f"{field}: {reason}" for field, reason in sorted(why.items()))


def stored_digests(values: Mapping[str, bytes]) -> dict[str, str]:
    """Edge id -> sha256 of its stored aggregate value, as `keyspace.fed_round_aggregate_digests` holds it."""
    return {edge_id: hashlib.sha256(values[edge_id]).hexdigest() for edge_id in sorted(values)}


def read_digests(raw: bytes | None, *, key: str) -> dict[str, str]:
    """Edge id -> digest, as `keyspace.fed_round_aggregate_digests` (`key`) holds them."""
    return parse_record(raw, key=key, reader=DIGESTS) if raw is not None else {}


@dataclass(frozen=True)
class PreparedRound:
    """A round ready to decrypt: its edges' sums and late buckets, and the noise its release carries."""

    spec: FederationSpec
    round: int
    record: FederationRecord  # as read before decrypting
    headers: Mapping[str, StoredAggregate]
    # Each edge's sum, in the order of `headers`, read from the store when indexed (`StoredSums`).
    ciphertexts: Sequence[memoryview]
    corrections: Sequence[memoryview | None]  # each masking cohort's mask correction, in the same order
    late: list[LateGroup]  # the late groups folded in
    late_left_out: int  # late uploads left out (`protocol.aggregation.fold_in`)
    noise: RoundNoise
    layout: AdapterLayout
    previous: np.ndarray  # the adapter the round builds on


@dataclass(frozen=True)
class CommitKeys:
    """The keys a round's commit reads and writes, and how a `RoundOutcome` lands on them."""

    fid: str
    round: int
    version_out: int
    basis_next: int  # the basis a re-basing publishes
    next_round: bool  # the commit may plan the next round
    rebase: bool  # the commit may re-base (and publish one more adapter version)
    contributors: tuple[str, ...]

    @property
    def record(self) -> str:
        return keyspace.fed_state(self.fid)

    @property
    def status(self) -> str:
        return keyspace.fed_round_status(self.fid, self.round)

    def stats(self, client_id: str) -> str:
        return keyspace.fed_client_stats(self.fid, client_id)

    @property
    def all(self) -> list[str]:
        fid, v_out = self.fid, self.version_out
        return [
            self.record,
            self.status,
            keyspace.fed_round_noise(fid, self.round),
            keyspace.fed_privacy(fid),
            keyspace.fed_validation(fid),
            keyspace.fed_ranks(fid),
            keyspace.fed_adapter(fid, v_out),
            keyspace.fed_adapter_meta(fid, v_out),
            *(
                [keyspace.fed_round_plan(fid, self.round + 1), keyspace.fed_round_status(fid, self.round + 1)]
                if self.next_round
                else []
            ),
            *(
                [
                    keyspace.fed_basis(fid, self.basis_next),
                    keyspace.fed_adapter(fid, v_out + 1),
                    keyspace.fed_adapter_meta(fid, v_out + 1),
                ]
                if self.rebase
                else []
            ),
            *(self.stats(cid) for cid in self.contributors),
        ]

    def stored(
        self,
        current: Mapping[str, bytes | None],
        record: FederationRecord,
        status: RoundStatus,
        discards: Discards,
    ) -> Stored:
        """The state the commit read (`record` and `status` already parsed). The validation history, the
        ranks and each contributor's stats are bookkeeping: one that does not parse is read as absent (the
        history starts afresh, the enrolled ranks hold, the hospital's counts start from zero) and left in
        `discards` for the caller to discard once the commit is done."""
        ledger_key, validation_key = keyspace.fed_privacy(self.fid), keyspace.fed_validation(self.fid)
        raw_ledger = current[ledger_key]
        ranks_key = keyspace.fed_ranks(self.fid)
        return Stored(
            record=record,
            status=status,
            ledger=parse_record(raw_ledger, key=ledger_key, reader=Ledger) if raw_ledger else Ledger(),
            validation=tuple(
                tuple(pair)
                for pair in discards.parse(
                    current[validation_key], key=validation_key, reader=VALIDATION, empty=[]
                )
            ),
            ranks=discards.parse(current[ranks_key], key=ranks_key, reader=RANKS, empty={}),
            stats={
                cid: stats
                for cid in self.contributors
                if (
                    stats := discards.parse(
                        current[self.stats(cid)], key=self.stats(cid), reader=ClientStats, empty=None
                    )
                )
                is not None
            },
        )

    def writes(self, outcome: RoundOutcome, signer: SigningKey | None) -> Updates:
        fid, v_out = self.fid, self.version_out
        updates: dict[str, bytes | None] = {
            self.status: outcome.status.model_dump_json().encode(),
            keyspace.fed_round_noise(fid, self.round): None,  # the noise is in the adapter now
            keyspace.fed_adapter(fid, v_out): outcome.vector,
            keyspace.fed_adapter_meta(fid, v_out): outcome.version.model_dump_json().encode(),
            **{self.stats(cid): stats.dump() for cid, stats in outcome.stats.items()},
            keyspace.fed_privacy(fid): outcome.ledger.dump(),
            self.record: outcome.record.dump(),
        }
        if outcome.validation is not None:
            updates[keyspace.fed_validation(fid)] = json.dumps(list(outcome.validation)).encode()
        if outcome.ranks is not None:
            updates[keyspace.fed_ranks(fid)] = json.dumps(dict(outcome.ranks), sort_keys=True).encode()
        if outcome.rebase is not None:
            rebase, v_new = outcome.rebase, outcome.rebase.version.version
            updates[keyspace.fed_basis(fid, rebase.summary.basis_version)] = rebase.basis
            updates[keyspace.fed_adapter(fid, v_new)] = rebase.vector
            updates[keyspace.fed_adapter_meta(fid, v_new)] = rebase.version.model_dump_json().encode()
        if outcome.next_round is not None:
            next_plan = signed(outcome.next_round.plan, signer)
            updates[keyspace.fed_round_plan(fid, self.round + 1)] = next_plan.model_dump_json().encode()
            updates[keyspace.fed_round_status(fid, self.round + 1)] = (
                outcome.next_round.status.model_dump_json().encode()
            )
        return updates


def commit_keys(fid: str, release: Release) -> CommitKeys:
    return CommitKeys(
        fid,
        release.round,
        release.version_out,
        release.spec.basis_version + 1,
        next_round=not release.completes,
        rebase=release.rebase_rank is not None,
        contributors=tuple(dict.fromkeys(c.client_id for c in release.contributions)),
    )


class RoundCloser:
    def __init__(
        self,
        store: StateStore,
        federations: FederationService,
        enrolment: EnrolmentService,
        board: PlanBoard,
        *,
        telemetry: CloudTelemetry,
        retention: Retention,
        policy: ClosePolicy,
        checks: SumChecks,
        pause: Pause = asyncio.sleep,
    ) -> None:
        """`checks`: receive's checks, made again on each stored sum before it is decrypted; `pause` waits
        between renewals of the closing lease (tests pass one they drive)."""
        self._checks = checks
        # Set once worker processes could not start on this host: every decryption after it stays in this
        # process (`_aggregate`).
        self._workers_unavailable = False
        self._telemetry = telemetry
        self._retention = retention
        self._policy = policy
        self._pause = pause
        self._key_backoff = KeyBackoff(policy)
        self._store = store
        self._federations = federations
        self._enrolment = enrolment
        self._board = board

    async def _is_over(self, fid: str, round_: int) -> bool:
        status = await read_record(self._store, keyspace.fed_round_status(fid, round_), RoundStatus)
        return status is None or status.state in FINAL_ROUND_STATES

    async def _seal(self, fid: str, round_: int, now: datetime) -> dict[str, str] | None:
        """Seal `round_`, so that no edge sum is stored into it from now on, and read in the same step which
        sums it holds (edge id -> digest of the stored value); None if the round is over. Sealing a sealed
        round reads it again."""
        seal_key = keyspace.fed_round_sealed(fid, round_)
        status_key = keyspace.fed_round_status(fid, round_)
        digests_key = keyspace.fed_round_aggregate_digests(fid, round_)
        held: list[dict[str, str] | None] = [None]

        def seal(current: dict[str, bytes | None]) -> Updates:
            raw = current[status_key]
            if (
                raw is None
                or parse_record(raw, key=status_key, reader=RoundStatus).state in FINAL_ROUND_STATES
            ):
                held[0] = None
                return {}
            held[0] = read_digests(current[digests_key], key=digests_key)
            if current[seal_key] is not None:
                return {}
            return {seal_key: json.dumps({"sealed_at": now.isoformat()}).encode()}

        await self._store.transaction([seal_key, status_key, digests_key], seal)
        return held[0]

    async def close(self, fid: str, round_: int, now: datetime, *, why: str) -> None:
        """Seal `round_` and close it with the aggregates it holds, unless another closer holds the lease,
        already closed it, or the last failed attempt's back-off has not passed (a round sealed with no
        aggregate is left to `fail`). A failed attempt (crypto errors aside) is recorded and logged; the
        last one allowed fails the round."""
        if self._key_backoff.waiting(fid, round_, now):
            return  # this replica could not unwrap the key: backing off
        failures = await close_failures(self._store, fid, round_)
        if failures is not None and now < failures.retry_at(self._policy):
            return  # backing off after a failed attempt
        lease = await Lease.take(
            self._store,
            keyspace.fed_round_closing(fid, round_),
            ttl_s=self._policy.lease_ttl_s,
            pause=self._pause,
        )
        if lease is None:
            return  # another closer is at work
        async with lease.renewed():
            if failures is not None and failures.attempts >= self._policy.max_attempts:
                await self._give_up(fid, round_, now, failures, lease)  # a previous give-up did not land
                return
            try:
                await self._close(fid, round_, now, why=why, lease=lease)
            except CryptoError as e:
                # A wrong KEK (`KeyStoreError`): backed off and shown, but not the round's fault, so never
                # counted towards failing it.
                await self._attempt_failed(fid, round_, now, e, before=failures, lease=lease, of_key=True)
            except Exception as e:
                await self._attempt_failed(fid, round_, now, e, before=failures, lease=lease)

    async def _attempt_failed(
        self,
        fid: str,
        round_: int,
        now: datetime,
        error: Exception,
        *,
        before: CloseFailures | None,
        lease: Lease,
        of_key: bool = False,
    ) -> None:
        """Count a failed close attempt and log it; after the last one allowed, fail the round (`of_key`: the
        federation's key did not unwrap on this replica: backed off, never failing the round). If the store
        refuses to count it (Redis at `maxmemory` takes no new data), back off by keeping the lease, whose
        TTL it still sets, for the delay this attempt would have earned."""
        where = {"federation_id": fid, "round": round_}
        try:
            failures = await record_failure(self._store, fid, round_, now, error, of_key=of_key)
        except StoreError as refused:
            delay_s = self._policy.delay_s((before.tries if before else 0) + 1)
            lease.keep_for(delay_s)
            log.warning(
                "closing the round failed: %s; the store refused to count the attempt (%s): no close for %s s",
                describe_error(error),
                refused,
                delay_s,
                exc_info=error,
                extra=where,
            )
            return
        if of_key:
            self._key_failed(fid, round_, now, failures.last_error, "closing")
            return
        log.warning(
            "closing the round failed (attempt %d of %d): %s",
            failures.attempts,
            self._policy.max_attempts,
            failures.last_error,
            exc_info=error,
            extra=where,
        )
        if failures.attempts >= self._policy.max_attempts:
            await self._give_up(fid, round_, now, failures, lease)

    def _key_failed(self, fid: str, round_: int, now: datetime, error: str, doing: str) -> None:
        """Back this replica off `round_` after the federation's key did not unwrap, and say so."""
        log.error(
            "%s the round failed: this cloud cannot unwrap the federation's key (is FEDLORA_KEK the one it "
            "was created with?); it tries again in %s s: %s",
            doing,
            self._key_backoff.failed(fid, round_, now),
            error,
            extra={"federation_id": fid, "round": round_},
        )

    async def expire(self, fid: str, round_: int, now: datetime, *, reason: str) -> None:
        """`round_`'s deadline passed with no edge sum: fail it and open the next round (`fail`), or close it if
        an edge sum was stored before its seal. A replica whose KEK does not unwrap the plan-signing key backs
        off as a close does (`KeyBackoff`) and counts the failure in the round's status (`close_attempts`,
        `close_error`), never against the round."""
        if self._key_backoff.waiting(fid, round_, now):
            return
        try:
            failed = await self.fail(fid, round_, now, reason=reason)
        except CryptoError as e:
            try:
                await record_failure(self._store, fid, round_, now, e, of_key=True)
            finally:
                self._key_failed(fid, round_, now, describe_error(e), "failing")
            return
        if not failed:
            await self.close(fid, round_, now, why="round deadline passed")

    async def _close(self, fid: str, round_: int, now: datetime, *, why: str, lease: Lease) -> None:
        sealed = await self._seal(fid, round_, now)
        if not sealed:
            return
        readable, unreadable, quarantined = await self._read_sums(fid, round_, sealed)
        if unreadable:
            # A sealed sum cannot be left out unnoticed: the round fails, the readable sums shown forwarded.
            reason = (
                f"stored edge sums that do not read back were quarantined: {', '.join(sorted(unreadable))}"
            )
            await self.fail(
                fid, round_, now, reason=reason, forwarded=readable.headers, sealed=sealed, lease=lease
            )
            return
        if quarantined:
            # Not sums `receive` would have taken from their fields' edges (another edge's sum, an edge not
            # enrolled, fewer than k hospitals): never decrypted, and the round goes on from the others.
            log.error(
                "stored edge sums that fail receive's checks were quarantined and left out of the round",
                extra={"federation_id": fid, "round": round_, "data": quarantined},
            )
            if not readable.edges:
                reason = f"every stored edge sum was quarantined: {_named(quarantined)}"
                await self.fail(fid, round_, now, reason=reason, sealed=sealed, lease=lease)
                return
        remaining = readable
        refused: dict[str, DropReason] = {}
        while True:
            prepared = await self._prepare(fid, round_, now, remaining, sealed, lease)
            if prepared is None:
                return
            try:
                decrypted = await self._decrypt(fid, prepared, now, sealed, lease)
            except RefusedSumsError as e:
                # Those edges' sums are out of range (a hospital's bad encoding) or their masks did not
                # cancel (a forged or partial sum, a wrong correction): the round closes from the other
                # edges' sums, prepared again without them (noise, charge).
                log.warning(
                    "edge sums that do not decrypt to an honest sum were left out of the round",
                    extra={
                        "federation_id": fid,
                        "round": round_,
                        "data": {"edges": list(e.edges), "reason": e.reason.value, "error": str(e)},
                    },
                )
                progress = [edge for edge in e.edges if edge in remaining.edges]
                if not progress or not (remaining := remaining.without(progress)).edges:
                    # Every sum the round holds shows as forwarded, and its uploads as dropped. A refusal that
                    # names no sum still in the round would make the next attempt the same one: it ends here.
                    reason = str(e) if progress else f"{e} (no sum left in the round is named: {e.edges})"
                    await self.fail(
                        fid,
                        round_,
                        now,
                        reason=reason,
                        forwarded=readable.headers,
                        sealed=sealed,
                        lease=lease,
                    )
                    return
                refused |= dict.fromkeys(progress, e.reason)
                continue
            break
        if decrypted is not None:
            result, metrics = decrypted
            if refused:
                result = dataclasses.replace(result, flagged=(*result.flagged, *refused))
                metrics["edges_flagged"] = float(len(result.flagged))
            if quarantined:
                metrics["sums_quarantined"] = float(len(quarantined))
            release = await self._release(fid, prepared, result, metrics, now=now)
            # Left out of the model, but held and counted: shown forwarded, their uploads dropped.
            left_out = {edge: (why, readable.headers[edge]) for edge, why in refused.items()}
            release = dataclasses.replace(release, refused=left_out)
            await self._commit(fid, release, sealed, why=why, lease=lease)

    async def _read_sums(
        self, fid: str, round_: int, sealed: Mapping[str, str]
    ) -> tuple[StoredSums, dict[str, str], dict[str, str]]:
        """The round's stored sums that read back (`readable_aggregates` against `sealed`) and pass receive's
        checks again (`SumChecks.stored`: stored under their own edge's hash field, that edge enrolled and
        its signature good, at least `k` of its hospitals in the manifest), their headers read one value at a
        time and the values left in the store (`StoredSums`); hash field -> why for each that does not read
        back; and hash field -> why for each that fails the checks. Each of the last two is copied to its
        quarantine key (`keyspace.fed_quarantine`, for the retention window) and logged with the key it came
        from and why (a value that is not the one recorded when the round was sealed included)."""
        return await read_sums(
            self._store,
            keyspace.fed_round_aggregates(fid, round_),
            sealed,
            quarantine=functools.partial(self._quarantine, fid, round_),
            check=functools.partial(self._checks.stored, fid, round_),
        )

    async def _quarantine(self, fid: str, round_: int, edge_id: str, value: bytes | None, why: str) -> None:
        """Copy an edge sum that does not read back to its quarantine key, and log it (or that it is gone)."""
        if value is None:
            log.error(
                "a stored edge sum recorded when the round was sealed is gone",
                extra={"federation_id": fid, "round": round_, "data": {"edge_id": edge_id}},
            )
            return
        target = keyspace.fed_quarantine(fid, f"round:{round_}:aggregate:{edge_id}")
        # Kept as long as the round's own sums (`RetentionPolicy.round_s`), for the operator to inspect.
        await self._store.set(target, value, ttl_s=self._retention.policy.round_s)
        log.error(
            "a stored edge sum does not read back, or is not a sum its edge could have had taken: quarantined",
            extra={
                "federation_id": fid,
                "round": round_,
                "data": {
                    "key": keyspace.fed_round_aggregates(fid, round_),
                    "edge_id": edge_id,
                    "quarantine": target,
                    "error": why,
                },
            },
        )

    async def _give_up(
        self, fid: str, round_: int, now: datetime, failures: CloseFailures, lease: Lease
    ) -> None:
        """Fail `round_` after its last allowed close attempt failed, with the sums it holds and, where they
        can still be computed, the noise they carry (for the ledger's charge)."""
        sealed = await self._seal(fid, round_, now)
        if sealed is None:
            return  # over meanwhile
        reason = f"closing the round failed {failures.attempts} times; the last error: {failures.last_error}"
        try:
            readable, _, _ = await self._read_sums(fid, round_, sealed)
            prepared = await self._prepare(fid, round_, now, readable, sealed, lease)
        except Exception as e:
            log.error(
                "the failing round's noise could not be computed: no ledger entry for the sums it holds: %s",
                describe_error(e),
                extra={"federation_id": fid, "round": round_},
            )
            await self.fail(fid, round_, now, reason=reason, sealed=sealed, lease=lease)
            return
        if prepared is not None:
            await self.fail(
                fid,
                round_,
                now,
                reason=reason,
                forwarded=prepared.headers,
                held=prepared.noise,
                sealed=sealed,
                lease=lease,
            )

    async def _noise(
        self,
        fid: str,
        round_: int,
        spec: FederationSpec,
        record: FederationRecord,
        sums: StoredSums,
    ) -> tuple[dict[str, StoredAggregate], list[LateGroup], list[LateGroup], RoundNoise]:
        """The edge sums `sums` holds (edge id -> header), the late buckets that count and those left out, and
        the noise the round's release carries."""
        headers = dict(sums.headers)  # by hash field, which `read_sums` holds to each header's edge id
        layout, _ = await self._federations.layout(fid)
        plan_key = keyspace.fed_round_plan(fid, round_)
        plan = parse_record(await self._store.get(plan_key) or b"", key=plan_key, reader=RoundPlan)
        fresh = [c for header in headers.values() for c in header.contributions]
        late, left_out = fold_in(fresh, late_groups(spec, round_, sums), k=spec.min_clients_per_edge)
        if left_out:
            _log_left_out(fid, round_, left_out)
        noise = round_noise(
            spec,
            multiplier=schedule_multiplier(
                spec.central_dp, round_index=record.rounds_closed, rounds=spec.rounds
            ),
            contributions=fresh,
            late=late,
            layout_size=layout.size,
            shares_planned=plan.noise_share.clients if plan.noise_share is not None else None,
            sums=[header.contributions for header in headers.values()],
        )
        return headers, late, left_out, noise

    async def _prepare(
        self,
        fid: str,
        round_: int,
        now: datetime,
        sums: StoredSums,
        sealed: Mapping[str, str],
        lease: Lease,
    ) -> PreparedRound | None:
        """What decrypting `round_` needs, with its noise; None, after failing the round if its release would
        pass the privacy budget, when it is not to be decrypted (or someone else closed it meanwhile)."""
        spec = await self._federations.spec(fid)
        record = await self._federations.record(fid)
        if record.current_round != round_ or await self._is_over(fid, round_):
            return None  # closed by someone else between our look and the lease
        layout, _ = await self._federations.layout(fid)
        previous_key = keyspace.fed_adapter(fid, record.adapter_version)
        previous_raw = await self._store.get(previous_key)
        if previous_raw is None:
            raise NotFoundError(
                f"adapter version {record.adapter_version} of {fid!r} is missing from the store"
            )
        previous = vector_from_bytes(previous_raw, layout.size, key=previous_key)
        headers, late, left_out, noise = await self._noise(fid, round_, spec, record, sums)
        prepared = PreparedRound(
            spec,
            round_,
            record,
            headers,
            sums.ciphertexts,
            sums.corrections,
            late,
            sum(len(g.contributions) for g in left_out),
            noise,
            layout,
            previous,
        )
        # The budget is a cap: a round whose release would pass it is never decrypted.
        over = None
        if spec.central_dp.epsilon_budget is not None:
            ledger = await read_record(self._store, keyspace.fed_privacy(fid), Ledger) or Ledger()
            over = overspend(spec, ledger, round_=round_, noise=noise, layout_size=layout.size)
        if over is not None:
            await self._fail_unreleased(
                prepared, now, sealed, lease, reason=over, ends=FederationState.BUDGET_EXHAUSTED
            )
            return None
        return prepared

    async def _fail_unreleased(
        self,
        prepared: PreparedRound,
        now: datetime,
        sealed: Mapping[str, str],
        lease: Lease,
        *,
        reason: str,
        ends: FederationState | None = None,
    ) -> None:
        """Fail `prepared`'s round with `reason`, nothing released from its sums (shown forwarded, their noise
        held), and end the federation in `ends` if given (`fail`)."""
        await self.fail(
            prepared.spec.federation_id,
            prepared.round,
            now,
            reason=reason,
            forwarded=prepared.headers,
            ends=ends,
            held=prepared.noise,
            sealed=sealed,
            lease=lease,
        )

    async def _decrypt(
        self, fid: str, prepared: PreparedRound, now: datetime, sealed: Mapping[str, str], lease: Lease
    ) -> tuple[Aggregated, dict[str, float]] | None:
        """The round's next adapter and what decrypting it measured; None, after failing the round, when its
        sum does not decrypt."""
        spec, round_, headers, noise = prepared.spec, prepared.round, prepared.headers, prepared.noise
        # A wrong KEK raises `KeyStoreError` here: not the round's fault, so it is not failed for it. Key
        # material that is not the federation's (`KeyBindingError`: a sealed key of another federation, a
        # public key swapped in the store) never decrypts: the round fails and the federation stops, with the
        # reason, instead of a close retried for ever.
        try:
            scheme = await self._federations.secret_scheme(fid)
        except KeyBindingError as e:
            reason = f"the federation's key material in the store is not its own: {e}"
            log.error("round failed and federation stopped: %s", reason, extra={"federation_id": fid})
            await self._fail_unreleased(
                prepared, now, sealed, lease, reason=reason, ends=FederationState.STOPPED
            )
            return None
        size = prepared.layout.size
        central = await self._federations.central_noise(fid, round_, noise, spec.he, size=size)
        started = time.perf_counter()
        try:
            result = await self._aggregate(
                fid,
                round_,
                functools.partial(
                    aggregate,
                    scheme,
                    prepared.ciphertexts,
                    global_vector=prepared.previous,
                    contributions=[c for header in headers.values() for c in header.contributions],
                    layout=prepared.layout,
                    strategy=strategy_for(spec),
                    noise=noise,
                    rows=[(edge_id, h.total_weight) for edge_id, h in headers.items()],
                    central=central,
                    k=spec.min_clients_per_edge,
                    late=prepared.late,
                    corrections=prepared.corrections,
                ),
            )
        except (KeyStoreError, RefusedSumsError):
            raise
        except CryptoError as e:
            reason = f"the sum of {len(headers)} edge aggregates did not decrypt: {e}"
            await self._fail_unreleased(prepared, now, sealed, lease, reason=reason)
            return None
        self._telemetry.decrypted(scheme.kind.value, result.decrypt_s)
        metrics = {
            "aggregation_s": time.perf_counter() - started,
            "edges_forwarded": float(len(headers)),
            "noise_multiplier": noise.multiplier,
            "noise_std": result.noise_std,
            "realised_noise_multiplier": noise.realised_multiplier,
            "sensitivity": noise.sensitivity,
        }
        if prepared.late:
            metrics["late_contributions"] = float(sum(len(g.contributions) for g in prepared.late))
        if prepared.late_left_out:
            metrics["late_left_out"] = float(prepared.late_left_out)
        if result.held_back:
            metrics["held_back_values"] = float(result.held_back)
        if result.flagged:
            metrics["edges_flagged"] = float(len(result.flagged))
            log.warning(
                "edges flagged as contaminated; their sums were left out",
                extra={"federation_id": fid, "round": round_, "data": {"edges": list(result.flagged)}},
            )
        return result, metrics

    async def _aggregate(self, fid: str, round_: int, decrypt: Callable[..., Aggregated]) -> Aggregated:
        """`decrypt(workers=...)` in a worker thread, over `ClosePolicy.decrypt_workers` processes; if no
        worker process can start on this host (`WorkersUnavailableError`), in this process, now and for every
        decryption after it (said once). A worker that dies mid-work stays a failed attempt, retried."""
        if not self._workers_unavailable:
            try:
                return await asyncio.to_thread(decrypt, workers=self._policy.decrypt_workers)
            except WorkersUnavailableError as e:
                self._workers_unavailable = True
                log.warning(
                    "decryption worker processes cannot start on this host (%s): this cloud decrypts in its "
                    "own process from now on (FEDLORA_DECRYPT_WORKERS=1 says so at start)",
                    e,
                    extra={"federation_id": fid, "round": round_},
                )
        return await asyncio.to_thread(decrypt, workers=1)

    async def _commit(
        self, fid: str, release: Release, sealed: Mapping[str, str], *, why: str, lease: Lease
    ) -> None:
        """Write what `round_outcome` decides for the decrypted round, in one transaction and only if this
        closer still holds the `lease`, the round is still open on the adapter it was decrypted from and holds
        exactly the aggregates `sealed` (edge id -> digest) it was decrypted from; then wake the long-polls
        and log it."""
        signer = await self._federations.plan_signer(fid)
        keys = commit_keys(fid, release)
        digests_key = keyspace.fed_round_aggregate_digests(fid, release.round)
        decided: list[RoundOutcome] = []
        stored: list[dict[str, str]] = []
        lost: list[bool] = []
        discards = Discards()

        def commit(current: dict[str, bytes | None]) -> Updates:
            stored[:], lost[:] = [], []
            discards.clear()
            if not lease.holds(current):
                lost[:] = [True]  # it lapsed while we decrypted: its next holder closes the round
                return {}
            record = parse_record(current[keys.record] or b"", key=keys.record, reader=FederationRecord)
            status = parse_record(current[keys.status] or b"", key=keys.status, reader=RoundStatus)
            if not still_open(release, record, status):
                return {}  # someone else closed it
            held = read_digests(current[digests_key], key=digests_key)
            if held != sealed:
                stored[:] = [held]
                return {}
            outcome = round_outcome(release, keys.stored(current, record, status, discards))
            decided[:] = [outcome]
            return keys.writes(outcome, signer)

        committed = await self._store.transaction([*keys.all, digests_key, lease.key], commit)
        await discards.settle(self._store)
        if not committed:
            if lost:
                log.error(
                    "round not committed: its closing lease lapsed while it was decrypted",
                    extra={"federation_id": fid, "round": release.round},
                )
            if stored:
                log.error(
                    "round not committed: the aggregates it holds are not those it was decrypted from",
                    extra={
                        "federation_id": fid,
                        "round": release.round,
                        "data": {"decrypted": sorted(sealed), "stored": sorted(stored[0])},
                    },
                )
            return
        self._board.publish(fid)
        await self._telemetry.round_ended(fid, release.round)
        await self._retention.round_ended(
            fid, release.round, adapter_version=decided[0].record.adapter_version
        )
        self._log_closed(fid, release, decided[0], why=why)

    async def _release(
        self,
        fid: str,
        prepared: PreparedRound,
        result: Aggregated,
        metrics: dict[str, float],
        *,
        now: datetime,
    ) -> Release:
        """The decrypted round with what its commit needs that the store holds outside the commit's keys."""
        spec, seen, layout = prepared.spec, prepared.record, prepared.layout
        _, in_features = await self._federations.layout(fid)
        rebase = spec.rank_policy.rebase_rank is not None and seen.basis_version is None
        update = result.vector.astype(np.float64) - prepared.previous
        return Release(
            spec=spec,
            round=prepared.round,
            now=now,
            seen=seen,
            headers=prepared.headers,
            late=prepared.late,
            result=result,
            noise=prepared.noise,
            metrics=metrics,
            layout=layout,
            # As of the next round, which they are asked to join: moves that waited for this one are done.
            clients=await self._enrolment.clients(fid, with_stats=False, round_=prepared.round + 1),
            basis_sha256=await self._federations.basis_sha256(fid, seen.basis(spec)),
            bases=(
                seeded_bases(layout, in_features, seed=spec.seed, basis_version=spec.basis_version)
                if rebase
                else None
            ),
            energy=column_energy(layout, update) if spec.rank_policy.grow_energy else None,
        )

    @staticmethod
    def _log_closed(fid: str, release: Release, outcome: RoundOutcome, *, why: str) -> None:
        where = {"federation_id": fid, "round": release.round}
        if outcome.grown:
            log.info("ranks grown", extra={**where, "data": outcome.grown})
        if outcome.rebase is not None:
            log.info(
                "validation loss settled: adapter re-based to a common rank",
                extra={**where, "data": outcome.rebase.summary.model_dump()},
            )
        if outcome.exhausted:
            log.warning("privacy budget exhausted: federation stopped: %s", outcome.stop_reason, extra=where)
        log.info(
            "round closed (%s)",
            why,
            extra={
                **where,
                "data": {
                    "adapter_version": release.version_out,
                    "clients": len(release.contributions),
                    "completed": release.completes,
                    "central_epsilon": outcome.epsilon,
                    **release.metrics_out,
                },
            },
        )

    async def stop(self, fid: str, now: datetime) -> bool:
        """The admin's stop, for the federation's open round: the round is sealed, so that no edge sum is
        stored into it from now on, and failed in the same transaction that stops the federation, with the
        sums it holds shown as forwarded and their noise charged, unreleased, against the decrypting cloud
        (it holds them). A round that closes or fails meanwhile (the deadline check got there first) is
        left to its closer and the stop goes on to the round opened after it, sealed and failed the same way.
        False when there was no open round to end this way: the caller changes the federation's state
        alone."""
        tried: int | None = None
        while True:
            record = await self._federations.record(fid)
            if record.ended or record.current_round is None or record.current_round == tried:
                return False
            round_ = tried = record.current_round
            sealed = await self._seal(fid, round_, now)
            if sealed is None:
                continue  # over meanwhile: go on to the round opened after it, if any
            spec = await self._federations.spec(fid)
            readable, _, _ = await self._read_sums(fid, round_, sealed)
            headers, _, _, noise = await self._noise(fid, round_, spec, record, readable)
            if await self.fail(
                fid,
                round_,
                now,
                reason="federation stopped",
                forwarded=headers,
                ends=FederationState.STOPPED,
                held=noise,
                sealed=sealed,
            ):
                return True

    async def _reopening(
        self, fid: str, round_: int, spec: FederationSpec, seen: FederationRecord, now: datetime
    ) -> Callable[[FederationRecord], dict[str, bytes | None]]:
        """The writes that open the round after a failed `round_` from the adapter `seen` names, given the
        federation record the failing transaction read: its plan is signed with the federation's key, opened
        here with the KEK (`KeyStoreError` if this replica's KEK does not unwrap it)."""
        clients = await self._enrolment.clients(fid, with_stats=False, round_=round_ + 1)
        signer = await self._federations.plan_signer(fid)
        vector_digest = await self._federations.adapter_sha256(fid, seen.adapter_version)
        basis_digest = await self._federations.basis_sha256(fid, seen.basis(spec))

        def reopen(record: FederationRecord) -> dict[str, bytes | None]:
            plan, opened = open_round(
                spec,
                round_=round_ + 1,
                adapter_version=record.adapter_version,
                layout_digest=record.layout_digest,
                clients=clients,
                now=now,
                rounds_closed=record.rounds_closed,
                basis_version=record.basis(spec),
                vector_sha256=vector_digest,
                basis_sha256=basis_digest,
            )
            return {
                keyspace.fed_round_plan(fid, round_ + 1): signed(plan, signer).model_dump_json().encode(),
                keyspace.fed_round_status(fid, round_ + 1): opened.model_dump_json().encode(),
                keyspace.fed_state(fid): record.model_copy(update={"current_round": round_ + 1}).dump(),
            }

        return reopen

    async def fail(
        self,
        fid: str,
        round_: int,
        now: datetime,
        *,
        reason: str,
        forwarded: Mapping[str, StoredAggregate] | None = None,
        ends: FederationState | None = None,
        held: RoundNoise | None = None,
        sealed: Mapping[str, str] | None = None,
        lease: Lease | None = None,
    ) -> bool:
        """Mark `round_` failed and open the next round from the same adapter, unless it is already over, and
        say whether this call failed it. `sealed`: the aggregates (edge id -> digest) the caller read after
        sealing the round; None: the caller read none, so the round is sealed here and failed only if it
        holds none (an edge sum stored before the seal is the closer's to count);
        `ends`: the federation ends instead of opening a round, in the same transaction, in that state
        (`budget_exhausted`: the round would have passed the privacy budget; `stopped`: by the admin), with
        `reason` on the record and the round. `held`:
        the noise on the edge sums the cloud received; with distributed noise the ledger charges them to the
        column against the decrypting cloud (it can decrypt them, released or not). `lease`: the closing
        lease the caller holds; nothing is written unless it still does."""
        if sealed is None:
            sealed = await self._seal(fid, round_, now)
            if sealed is None:
                return False
            if sealed:
                log.info(
                    "round not failed: an edge sum was stored before it was sealed",
                    extra={"federation_id": fid, "round": round_, "data": {"edges": sorted(sealed)}},
                )
                return False
        spec = await self._federations.spec(fid)
        record_key, status_key = keyspace.fed_state(fid), keyspace.fed_round_status(fid, round_)
        digests_key = keyspace.fed_round_aggregate_digests(fid, round_)
        next_keys = [keyspace.fed_round_plan(fid, round_ + 1), keyspace.fed_round_status(fid, round_ + 1)]
        ledger_key = keyspace.fed_privacy(fid)
        seen = await self._federations.record(fid)
        # An ending opens no round, so it signs no plan and needs no key (a wrong-KEK replica can stop).
        reopen = None if ends is not None else await self._reopening(fid, round_, spec, seen, now)

        def commit(current: dict[str, bytes | None]) -> Updates:
            if lease is not None and not lease.holds(current):
                return {}  # the caller's lease lapsed: its next holder ends the round
            record = parse_record(current[record_key] or b"", key=record_key, reader=FederationRecord)
            status = parse_record(current[status_key] or b"", key=status_key, reader=RoundStatus)
            if status.state in FINAL_ROUND_STATES or record.ended or record.current_round != round_:
                return {}
            if (record.adapter_version, record.basis(spec)) != (seen.adapter_version, seen.basis(spec)):
                return {}  # the round was closed meanwhile (closing moves the adapter on)
            if read_digests(current[digests_key], key=digests_key) != sealed:
                return {}  # not the sums the failer read (the round is sealed: only a foreign write does it)
            failed = failed_status(status, forwarded or {}, now, reason=reason)
            charged: dict[str, bytes | None] = {}
            if held is not None and held.distributed:
                raw = current[ledger_key]
                ledger = parse_record(raw, key=ledger_key, reader=Ledger) if raw else Ledger()
                entry = entry_for(round_, held, [], 0.0).model_copy(update={"released": False})
                charged[ledger_key] = Ledger(rounds=(*ledger.rounds, entry)).dump()
            if reopen is None:
                stop = {"state": ends, "reason": reason[:2000]}
                return charged | {
                    status_key: failed.model_copy(update={"stop_reason": reason[:2000]})
                    .model_dump_json()
                    .encode(),
                    record_key: record.model_copy(update=stop).dump(),
                }
            # The next round reopens from the same adapter, so the federation does not stall.
            return charged | {status_key: failed.model_dump_json().encode(), **reopen(record)}

        fence = [lease.key] if lease is not None else []
        if not await self._store.transaction(
            [record_key, status_key, ledger_key, digests_key, *next_keys, *fence], commit
        ):
            return False
        self._board.publish(fid)
        await self._telemetry.round_ended(fid, round_)
        await self._retention.round_ended(fid, round_, adapter_version=seen.adapter_version)
        what = {
            None: "round failed",
            FederationState.BUDGET_EXHAUSTED: "privacy budget exhausted: federation stopped",
        }.get(ends, "federation stopped; its open round failed")
        log.warning("%s: %s", what, reason, extra={"federation_id": fid, "round": round_})
        return True
