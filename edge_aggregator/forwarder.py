"""Forwarding a closed round: one signed `EdgeAggregate`, only with at least `min_clients_per_edge`
contributions, and its outcome recorded once.

The aggregate is deterministic (contributions sorted by client, Ed25519 signatures are deterministic), so a
retry after a lost answer is byte-identical and the cloud counts it once by idempotency key and digest.
A cloud that cannot be reached leaves the round pending (no outcome): the next tick tries again. A refusal
that names clients the cloud will not count in this sum (counted at another edge, a replayed upload, a
manifest line that does not verify with the key enrolled now) takes them out of it and forwards the others
again, as long as the sum still holds `min_clients_per_edge` (not a masked sum: see `_deliver`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime
from typing import Any

from edge_aggregator.cloud_link import CloudLink
from edge_aggregator.config import EdgeConfig
from edge_aggregator.ledger import ForwardStatus, Outcome, Resum, RoundLedger
from protocol.messages import Contribution, EdgeAggregate, ErrorCode, LateSum, RoundPlan
from services.http import PeerRefusedError, PeerUnavailableError
from services.identity import SigningKey
from services.metrics import Metrics

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
        metrics: Metrics,
        resum: Resum,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._ledger = ledger
        self._link = link
        self._key = signing_key
        self._resum = resum
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
        ciphertext = await self._ledger.sum_bytes(round_)
        extra: dict[str, Any] = {"round": round_, "edge_id": self.config.edge_id}
        if len(manifest) < k or plan is None or ciphertext is None:
            too_few = len(manifest) < k
            detail = (
                f"{len(manifest)} contributions, fewer than min_clients_per_edge={k}"
                if too_few
                else "the round's plan or sum is missing from the store"
            )
            code = ErrorCode.TOO_FEW_CLIENTS if too_few else ErrorCode.INTERNAL
            log.warning("round not forwarded: " + detail, extra={**extra, "code": code.value})
            late_left = sum(len(b) for b in (await self._ledger.late_buckets(round_)).values())
            skipped = Outcome(
                status=ForwardStatus.SKIPPED,
                count=len(manifest),
                at=now,
                detail=detail,
                late_dropped=late_left,
            )
            return await self._ledger.record(round_, skipped)
        late, dropped = await self._late_sums(round_, k)
        aggregate = self._signed(round_, plan, manifest, ciphertext, late, mask_correction)
        late_count = sum(bucket.count for bucket in late)
        digest = hashlib.sha256(ciphertext).hexdigest()
        try:
            await self._link.forward(aggregate)
        except PeerUnavailableError as e:
            log.warning(
                "forward failed; the next tick retries it", extra={**extra, "data": {"error": str(e)}}
            )
            return None
        except PeerRefusedError as e:
            # A masked sum cannot lose a hospital: its cohort's correction covers exactly the survivors it
            # unmasked, and without one of them the rest no longer unmasks (the cohort would have to unmask
            # again with that hospital counted as dropped).
            if mask_correction is None and await self._take_out(round_, e):
                return await self._deliver(round_, now, None)
            log.error(
                "cloud refused the aggregate",
                extra={**extra, "code": e.code, "status": e.status, "data": {"error": e.message}},
            )
            outcome = Outcome(status=ForwardStatus.REFUSED, count=aggregate.count, at=now, detail=str(e))
            return await self._ledger.record(round_, outcome)
        # The body `HttpCloudLink` sent (serialised again: the link takes the model, not bytes).
        self._metrics.sent(self.config.federation_id, len(aggregate.model_dump_json().encode()))
        log.info(
            "aggregate forwarded",
            extra={
                **extra,
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
            ciphertext_sha256=digest,
            late_forwarded=late_count,
            late_dropped=dropped,
        )
        return await self._ledger.record(round_, outcome)

    async def _take_out(self, round_: int, refusal: PeerRefusedError) -> bool:
        """After `refusal`, take the clients it names out of the sum they are in (`detail.round`: the round
        they trained for, this round's own sum or a late bucket); whether any was taken out (each retry
        takes out at least one client, so the retries end)."""
        named = refusal.detail.get("client_ids")
        origin = refusal.detail.get("round", round_)
        if refusal.code not in _NAMES_CLIENTS or not isinstance(named, list) or not isinstance(origin, int):
            return False
        taken = await self._ledger.exclude(
            round_, [str(cid) for cid in named], origin=origin, resum=self._resum
        )
        if taken:
            log.warning(
                "clients taken out of a sum the cloud refused; forwarding the others again",
                extra={
                    "round": round_,
                    "edge_id": self.config.edge_id,
                    "code": refusal.code,
                    "data": {"client_ids": taken, "origin_round": origin, "error": refusal.message},
                },
            )
        return bool(taken)

    async def _late_sums(self, round_: int, k: int) -> tuple[list[LateSum], int]:
        """The round's buckets of late uploads that hold at least `k` (the rule every sum the cloud decrypts
        obeys), oldest origin first, and how many late uploads the smaller buckets leave out."""
        sums: list[LateSum] = []
        dropped = 0
        for origin, bucket in (await self._ledger.late_buckets(round_)).items():
            ciphertext = await self._ledger.late_sum_bytes(round_, origin)
            origin_plan = await self._ledger.plan(origin)
            if origin_plan is None:
                # Without its plan the bucket cannot name it, and the cloud would refuse the whole aggregate.
                dropped += len(bucket)
                log.warning(
                    f"late uploads for round {origin} not forwarded: this edge no longer holds that round's plan",
                    extra={"round": round_, "edge_id": self.config.edge_id, "code": "internal"},
                )
                continue
            if len(bucket) < k or ciphertext is None:
                dropped += len(bucket)
                log.warning(
                    f"late uploads for round {origin} not forwarded: {len(bucket)} of them, fewer than "
                    f"min_clients_per_edge={k}",
                    extra={"round": round_, "edge_id": self.config.edge_id, "code": "too_few_clients"},
                )
                continue
            contributions = tuple(bucket[c] for c in sorted(bucket))
            sums.append(
                LateSum(
                    origin_round=origin,
                    ciphertext=ciphertext,
                    contributions=contributions,
                    plan_sha256=origin_plan.sha256,
                )
            )
        return sums, dropped

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
