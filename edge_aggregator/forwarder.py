"""Forwarding a closed round: one signed `EdgeAggregate`, only with at least `min_clients_per_edge`
contributions, and its outcome recorded once.

The aggregate is deterministic (contributions sorted by client, Ed25519 signatures are deterministic), so a
retry after a lost answer is byte-identical and the cloud counts it once (it compares the digest of all the
edge signed).
A cloud that cannot be reached leaves the round pending (no outcome): the next tick tries again. A refusal
that names clients the cloud will not count in this sum (counted at another edge, a replayed upload, a
manifest line that does not verify with the key enrolled now) takes them out of it, counted as dropped
(`client_refused`), and forwards the others again, as long as the sum still holds `min_clients_per_edge`
(not a masked sum: see `_deliver`); a replica that finds them taken out by a sibling replica already forwards
what the store holds, counting nothing (`_taken_out_elsewhere`).

What a 202 to a hospital promises (docs/api.md): its update reaches a model, or a visible record says why
not. A forward retries for at most `FederationSpec.forward_budget_s` past the round's upload deadline, which
the spec's deadline margin covers. A sum the cloud refuses as closed (the edge was down at its deadline, a
superseded round, clocks that differ) and a late bucket smaller than `k` are carried into a later round's
bucket for their round (`RoundLedger.carry`) while the federation takes late uploads and the sum is at most
`late_uploads.max_staleness` late, and until the federation ends (no round opens after that: what the edge
still holds is given up, `give_up`); whatever is given up is a `Drop` in the recorded outcome, counted in the
store and in `fedlora_uploads_dropped_total{reason}`, logged, and shown in the round's status.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from edge_aggregator.cloud_link import CloudLink
from edge_aggregator.config import EdgeConfig, aware
from edge_aggregator.errors import UnsettledError
from edge_aggregator.ledger import Drop, ForwardStatus, Outcome, Resum, RoundLedger
from protocol.messages import Contribution, DropReason, EdgeAggregate, ErrorCode, LateSum, RoundPlan
from services.http import PeerRefusedError, PeerUnavailableError
from services.identity import SigningKey
from services.metrics import ServiceMetrics

log = logging.getLogger("edge_aggregator")

#: Refusals whose `detail.client_ids` names clients that the cloud refuses in this sum, not the sum itself
#: (`unknown_client`: a hospital that is another edge's in that round, as one that moved mid-round is).
_NAMES_CLIENTS = frozenset(
    {
        ErrorCode.DUPLICATE_UPLOAD.value,
        ErrorCode.CLIENT_COUNTED_ELSEWHERE.value,
        ErrorCode.UNKNOWN_CLIENT.value,
        ErrorCode.REPLAY.value,
        ErrorCode.BAD_CONTRIBUTION_SIGNATURE.value,
    }
)


class Forwarder:
    """Sends closed rounds to the cloud, one at a time."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        ledger: RoundLedger,
        link: CloudLink,
        signing_key: SigningKey,
        metrics: ServiceMetrics,
        resum: Resum,
        settle: Callable[[int], Awaitable[bool]],
        current_round: Callable[[], int | None],
        ended: Callable[[], bool],
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._ledger = ledger
        self._link = link
        self._key = signing_key
        self._resum = resum
        # Folds a round's stored uploads into its sums (`Folder.settle`): after clients are taken out, the sum
        # is added again before the others are forwarded.
        self._settle = settle
        self._current_round = current_round  # the round of the plan the edge follows now
        self._ended = ended  # whether the cloud said the federation ended: no later round will open
        self._lock = asyncio.Lock()  # two triggers in one process never send at the same time

    async def deliver(
        self, round_: int, now: datetime, *, mask_correction: bytes | None = None
    ) -> Outcome | None:
        """Forward closed `round_` unless it has an outcome already (with the residues that remove its
        cohort's masks, in a masking federation). Returns the outcome, or None if the cloud could not be
        reached (the round stays pending)."""
        async with self._lock:
            return await self._deliver(round_, now, mask_correction)

    async def _deliver(self, round_: int, now: datetime, mask_correction: bytes | None) -> Outcome | None:
        done = await self._ledger.outcome(round_)
        if done is not None:
            return done
        manifest = await self._ledger.manifest(round_)
        plan = await self._ledger.plan(round_)
        k = self.config.spec.min_clients_per_edge
        try:
            ciphertext = await self._settled_sum(round_, round_) if len(manifest) >= k else None
            if len(manifest) < k or plan is None or ciphertext is None:
                return await self._skip(round_, now, manifest, missing=len(manifest) >= k)
            late, late_drops = await self._late_sums(round_, plan, k)
        except UnsettledError:
            return None  # a sum altered since the round settled was quarantined: the next tick folds again
        aggregate = self._signed(round_, plan, manifest, ciphertext, late, mask_correction)
        try:
            await self._link.forward(aggregate, within_s=self._budget_left(plan, now))
        except PeerUnavailableError as e:
            log.warning(
                "forward failed; the next tick retries it",
                extra={"round": round_, "edge_id": self.config.edge_id, "data": {"error": str(e)}},
            )
            return None
        except PeerRefusedError as e:
            # A masked sum cannot lose a hospital: its cohort's correction covers exactly the survivors it
            # unmasked, and without one of them the rest no longer unmasks (the cohort would have to unmask
            # again with that hospital counted as dropped).
            if mask_correction is None and (
                await self._take_out(round_, e) or await self._taken_out_elsewhere(round_, aggregate, e)
            ):
                # Taking clients out resets a sum that held them: forwarded again once the folder has added
                # the others back (else pending, for the next tick).
                if not await self._settle(round_):
                    return None
                return await self._deliver(round_, now, None)
            return await self._refused(round_, now, aggregate, e, late_drops)
        return await self._delivered(round_, now, aggregate, late_drops)

    def _budget_left(self, plan: RoundPlan, now: datetime) -> float:
        """Seconds of the round's forward budget left (`FederationSpec.forward_budget_s` past its upload
        deadline): the spec's deadline margin covers it, so a forward within it reaches the cloud before the
        round closes there."""
        ends = aware(plan.deadline) + timedelta(seconds=self.config.spec.forward_budget_s)
        return max(0.0, (ends - now).total_seconds())

    async def _skip(
        self, round_: int, now: datetime, manifest: dict[str, Contribution], *, missing: bool
    ) -> Outcome:
        """Record a round that is not forwarded: fewer than k contributions, or (`missing`) at least k but
        its plan or sum is missing from the store. Its late buckets are carried on (or dropped)."""
        k = self.config.spec.min_clients_per_edge
        if missing:
            detail, reason = "the round's plan or sum is missing from the store", DropReason.PLAN_MISSING
        else:
            detail = f"{len(manifest)} contributions, fewer than min_clients_per_edge={k}"
            reason = DropReason.TOO_FEW_CLIENTS
        code = ErrorCode.INTERNAL if missing else ErrorCode.TOO_FEW_CLIENTS
        log.warning(
            "round not forwarded: " + detail,
            extra={"round": round_, "edge_id": self.config.edge_id, "code": code.value},
        )
        drops = [Drop(round=round_, reason=reason, count=len(manifest))] if manifest else []
        for origin, bucket in (await self._ledger.late_buckets(round_)).items():
            if bucket:
                drops += await self._carry_or_drop(round_, origin, len(bucket), DropReason.TOO_FEW_CLIENTS)
        skipped = Outcome(
            status=ForwardStatus.SKIPPED,
            count=len(manifest),
            at=now,
            detail=detail,
            late_dropped=sum(d.count for d in drops if d.round != round_),
            dropped=tuple(drops),
        )
        return await self.record(round_, skipped)

    async def give_up(self, round_: int, now: datetime, *, why: str) -> Outcome:
        """Record round `round_`, never forwarded, as given up because the federation ended (`why`): its own
        uploads and its late buckets (carried sums among them) are counted dropped, `federation_ended`. A
        round with an outcome already keeps it."""
        async with self._lock:
            done = await self._ledger.outcome(round_)
            if done is not None:
                return done
            manifest = await self._ledger.manifest(round_)
            held = {round_: len(manifest)}
            held |= {origin: len(b) for origin, b in (await self._ledger.late_buckets(round_)).items()}
            reason = DropReason.FEDERATION_ENDED
            drops = tuple(Drop(round=origin, reason=reason, count=n) for origin, n in held.items() if n)
            given_up = Outcome(
                status=ForwardStatus.SKIPPED,
                count=len(manifest),
                at=now,
                detail=f"not forwarded: {why}",
                late_dropped=sum(d.count for d in drops if d.round != round_),
                dropped=drops,
            )
            return await self.record(round_, given_up)

    async def _refused(
        self,
        round_: int,
        now: datetime,
        aggregate: EdgeAggregate,
        refusal: PeerRefusedError,
        late_drops: list[Drop],
    ) -> Outcome:
        """Record a refused aggregate. A round the cloud had closed is carried, its own sum and its late
        buckets, into a later round's buckets while the federation takes late uploads; any other refusal
        (or a sum too late to carry) drops them."""
        where = {"round": round_, "edge_id": self.config.edge_id, "code": refusal.code}
        log.error(
            "cloud refused the aggregate",
            extra={**where, "status": refusal.status, "data": {"error": refusal.message}},
        )
        closed = refusal.code == ErrorCode.ROUND_CLOSED.value
        reason = DropReason.TOO_LATE if closed else DropReason.REFUSED
        drops = list(late_drops)
        carried_into = None
        for origin, count in [
            (round_, aggregate.count),
            *((b.origin_round, b.count) for b in aggregate.late),
        ]:
            into = await self._carry(round_, origin) if closed else None
            if into is None:
                drops.append(Drop(round=origin, reason=reason, count=count))
            elif origin == round_:
                carried_into = into
        outcome = Outcome(
            status=ForwardStatus.CARRIED if carried_into is not None else ForwardStatus.REFUSED,
            count=aggregate.count,
            at=now,
            detail=str(refusal),
            carried_into=carried_into,
            late_dropped=sum(d.count for d in drops if d.round != round_),
            dropped=tuple(drops),
        )
        return await self.record(round_, outcome)

    async def _delivered(
        self, round_: int, now: datetime, aggregate: EdgeAggregate, late_drops: list[Drop]
    ) -> Outcome:
        # The body `HttpCloudLink` sent (serialised again: the link takes the model, not bytes).
        self._metrics.sent(self.config.federation_id, len(aggregate.model_dump_json().encode()))
        late_count = sum(bucket.count for bucket in aggregate.late)
        dropped = sum(d.count for d in late_drops)
        log.info(
            "aggregate forwarded",
            extra={
                "round": round_,
                "edge_id": self.config.edge_id,
                "code": "forwarded",
                "data": {
                    "count": aggregate.count,
                    "total_weight": aggregate.total_weight,
                    "late_forwarded": late_count,
                    "late_dropped": dropped,
                },
            },
        )
        outcome = Outcome(
            status=ForwardStatus.DELIVERED,
            count=aggregate.count,
            at=now,
            ciphertext_sha256=hashlib.sha256(aggregate.ciphertext).hexdigest(),
            late_forwarded=late_count,
            late_dropped=dropped,
            dropped=tuple(late_drops),
        )
        return await self.record(round_, outcome)

    async def record(self, round_: int, outcome: Outcome) -> Outcome:
        """Record `outcome` once; the process that writes it counts and logs the uploads it drops."""
        recorded, wrote = await self._ledger.record(round_, outcome)
        if not wrote:
            return recorded
        for drop in outcome.dropped:
            self._metrics.dropped(self.config.federation_id, drop.reason, drop.count)
            log.warning(
                f"{drop.count} acknowledged uploads for round {drop.round} reach no model: {drop.reason.value}",
                extra={
                    "round": drop.round,
                    "edge_id": self.config.edge_id,
                    "code": "uploads_dropped",
                    "data": {"reason": drop.reason.value, "count": drop.count, "decided_in_round": round_},
                },
            )
        if outcome.carried_into is not None:
            log.warning(
                f"the cloud had closed round {round_}: its sum joins round {outcome.carried_into} as late uploads",
                extra={"round": round_, "edge_id": self.config.edge_id, "code": "carried"},
            )
        return recorded

    async def _carry(self, round_: int, origin: int) -> int | None:
        """Carry closed round `round_`'s sum for `origin` into the first later round, not before the one the
        edge follows now, that is still open here and at most `max_staleness` after `origin`; that round, or
        None when there is none (or the federation takes no late uploads, or has ended)."""
        late = self.config.spec.late_uploads
        if late is None or self._ended():
            return None
        into = max(round_ + 1, self._current_round() or 0)
        while into - origin <= late.max_staleness:
            if await self._ledger.carry(round_, origin=origin, into=into, resum=self._resum):
                return into
            into += 1
        return None

    async def _carry_or_drop(self, round_: int, origin: int, count: int, reason: DropReason) -> list[Drop]:
        """Carry round `round_`'s bucket for `origin` on (`_carry`), or the drop that records it, for `reason`."""
        if await self._carry(round_, origin) is not None:
            return []
        log.warning(
            f"late uploads for round {origin} not forwarded with round {round_}: {reason.value}",
            extra={"round": round_, "edge_id": self.config.edge_id, "code": reason.value},
        )
        return [Drop(round=origin, reason=reason, count=count)]

    async def _take_out(self, round_: int, refusal: PeerRefusedError) -> bool:
        """After `refusal`, take the clients it names out of the sum they are in (`detail.round`: the round
        they trained for, this round's own sum or a late bucket); whether any was taken out (each retry
        takes out at least one client, so the retries end)."""
        named = refusal.detail.get("client_ids")
        origin = refusal.detail.get("round", round_)
        if refusal.code not in _NAMES_CLIENTS or not isinstance(named, list) or not isinstance(origin, int):
            return False
        reason = DropReason.CLIENT_REFUSED
        taken = await self._ledger.exclude(round_, [str(cid) for cid in named], origin=origin, reason=reason)
        if taken:
            # `exclude` counted them in the store with the exclusion; the process that took them out counts
            # them in the metric and logs them.
            self._metrics.dropped(self.config.federation_id, reason, len(taken))
            log.warning(
                f"{len(taken)} acknowledged uploads for round {origin} reach no model: {reason.value}; "
                "forwarding the others again",
                extra={
                    "round": origin,
                    "edge_id": self.config.edge_id,
                    "code": "uploads_dropped",
                    "data": {
                        "reason": reason.value,
                        "count": len(taken),
                        "decided_in_round": round_,
                        "client_ids": taken,
                        "refusal": refusal.code,
                        "error": refusal.message,
                    },
                },
            )
        return bool(taken)

    async def _taken_out_elsewhere(
        self, round_: int, aggregate: EdgeAggregate, refusal: PeerRefusedError
    ) -> bool:
        """Whether the clients `refusal` names were in the sum `aggregate` carried and are out of it in the
        store now: another replica of this edge, refused the same sum at the same time, took them out (and
        counted them) first. The forward is then the sibling's to finish: forwarding what the store holds now
        sends the sibling's sum again, byte for byte (the cloud answers the copy 200, counted once), or finds
        the outcome the sibling recorded, and nothing is counted dropped twice or recorded refused while the
        cloud counts the rest. Each such retry follows a sum that shrank in the store, so the retries end."""
        named = refusal.detail.get("client_ids")
        origin = refusal.detail.get("round", round_)
        if refusal.code not in _NAMES_CLIENTS or not isinstance(named, list) or not isinstance(origin, int):
            return False
        if origin == round_:
            sent = {c.client_id for c in aggregate.contributions}
            now = await self._ledger.manifest(round_)
        else:
            sent = {c.client_id for b in aggregate.late if b.origin_round == origin for c in b.contributions}
            now = (await self._ledger.late_buckets(round_)).get(origin, {})
        refused = {str(cid) for cid in named}
        elsewhere = bool(refused & sent) and not refused & now.keys()
        if elsewhere:
            log.info(
                "the refused clients were taken out by another replica; forwarding what the store holds",
                extra={"round": round_, "edge_id": self.config.edge_id, "code": refusal.code},
            )
        return elsewhere

    async def _late_sums(self, round_: int, plan: RoundPlan, k: int) -> tuple[list[LateSum], list[Drop]]:
        """The round's buckets of late uploads that go with its aggregate: those of at least `k` (the rule
        every sum the cloud decrypts obeys) made in this round's basis, oldest origin first. A smaller bucket
        is carried into the next round while it may still be late there; what is given up is a `Drop`.
        Deterministic for a given store, so that a retried forward is byte-identical."""
        sums: list[LateSum] = []
        drops: list[Drop] = []
        for origin, bucket in (await self._ledger.late_buckets(round_)).items():
            ciphertext = await self._settled_sum(round_, origin)
            origin_plan = await self._ledger.plan(origin)
            if not bucket:
                continue
            if origin_plan is None or ciphertext is None:
                # Without its plan the bucket cannot name it, and the cloud would refuse the whole aggregate.
                drops.append(Drop(round=origin, reason=DropReason.PLAN_MISSING, count=len(bucket)))
            elif origin_plan.basis_version != plan.basis_version:
                # The cloud refuses a whole aggregate whose late bucket trained in another basis.
                drops.append(Drop(round=origin, reason=DropReason.BASIS_CHANGED, count=len(bucket)))
            elif len(bucket) < k:
                drops += await self._carry_or_drop(round_, origin, len(bucket), DropReason.TOO_FEW_CLIENTS)
            else:
                sums.append(
                    LateSum(
                        origin_round=origin,
                        ciphertext=ciphertext,
                        contributions=tuple(bucket[c] for c in sorted(bucket)),
                        plan_sha256=origin_plan.sha256,
                    )
                )
        return sums, drops

    async def _settled_sum(self, round_: int, origin: int) -> bytes | None:
        """Round `round_`'s sum for `origin`, read with its checkpoint and checked against it (MAC, digest):
        the bytes forwarded are the bytes checked, whatever the store holds a moment later. `UnsettledError`
        when it no longer holds every upload its manifest names (altered in the store after the round
        settled: quarantined by the read, and summed again by the folder)."""
        start = await self._ledger.fold_start(round_, origin)
        if start.pending:
            raise UnsettledError(
                f"round {round_}'s sum for round {origin} lacks {len(start.pending)} uploads"
            )
        return start.stored

    def _signed(
        self,
        round_: int,
        plan: RoundPlan,
        manifest: dict[str, Contribution],
        ciphertext: bytes,
        late: list[LateSum],
        mask_correction: bytes | None,
    ) -> EdgeAggregate:
        # Deterministic (contributions sorted, Ed25519 deterministic): a retried forward is byte-identical,
        # so the cloud recognises it by idempotency key and digest.
        unsigned = EdgeAggregate(
            federation_id=self.config.federation_id,
            round=round_,
            basis_version=plan.basis_version,
            edge_id=self.config.edge_id,
            ciphertext=ciphertext,
            contributions=tuple(manifest[c] for c in sorted(manifest)),
            idempotency_key=self.config.idempotency_key(round_),
            late=tuple(late),
            plan_sha256=plan.sha256,
            mask_correction=mask_correction,
        )
        return unsigned.model_copy(update={"signature": self._key.sign(unsigned.signing_payload())})
