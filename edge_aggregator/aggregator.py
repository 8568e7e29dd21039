"""The edge's core, without HTTP: check uploads, add them into one running ciphertext, forward the sum.

`EdgeAggregator.accept` runs docs/api.md's checks in the documented order and raises one `ServiceError`
subclass per refusal code. Only an upload that passed every check reaches `RoundLedger.add`, the one
store transaction that stores its ciphertext with its manifest line and nonce marker; it is acknowledged once
stored. The folder (`edge_aggregator.folder`) adds stored uploads into the round's sum off the request path
(`fold_pending`, run by the edge's background loop), and a round is forwarded only once its sums hold every
upload it accepted.

A round closes here once (`RoundLedger.close`, SET NX) when `ceil(quorum * expected)` of its clients have
uploaded, at its deadline, or when the cloud published a later round; it is then forwarded once, and only
with at least `min_clients_per_edge` contributions. A forward the cloud could not take is retried by the
next `tick`; the sum stays in the store until an outcome is recorded. Everything that matters lives in the
store; the plan and roster held here are caches the edge refetches after a restart.

In a masking federation (`EdgeConfig.masking`) the round's hospitals form a cohort whose stages
`edge_aggregator.masking` runs: only hospitals that shared their seeds may upload, the quorum counts them,
and a closed round is forwarded only once its cohort unmasked, with the correction beside the sum.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from edge_aggregator.cloud_link import CloudLink, FederationNotActiveError
from edge_aggregator.cohort_store import CohortFailure, CohortStore
from edge_aggregator.config import EdgeConfig, aware, quorum_target
from edge_aggregator.errors import (
    BadSignatureError,
    DuplicateUploadError,
    MaskingOffError,
    PlanMismatchError,
    ReplayError,
    RoundClosedError,
    RoundNotOpenYetError,
    UnauthenticatedError,
    UnknownFederationError,
    WrongBasisError,
    WrongCohortError,
    WrongRoundError,
)
from edge_aggregator.fold import parse_upload, sum_uploads
from edge_aggregator.folder import FOLD_BATCH, Folder
from edge_aggregator.forwarder import Forwarder
from edge_aggregator.handoff import Handoff
from edge_aggregator.ledger import CloseReason, Closure, Drop, ForwardStatus, Outcome, RoundLedger
from edge_aggregator.masking import MaskingStages, Posted, Produced
from edge_aggregator.sum_seal import SumSeal
from protocol.crypto import EncryptedVector, HEScheme
from protocol.messages import (
    ClientInfo,
    ClientUpdate,
    Contribution,
    DropReason,
    EdgeProgress,
    FederationState,
    PlanViewError,
    RoundPlan,
    UploadAccepted,
)
from protocol.secagg import CohortId, Consent, Stage, StageRequest
from services.clock import Clock, utc_now
from services.errors import FederationEndedError, ForbiddenError, InvalidRequestError
from services.http import PeerRefusedError, PeerUnavailableError
from services.identity import IdentityError, SigningKey, verify
from services.metrics import EdgeMetrics
from services.store import StateStore

log = logging.getLogger("edge_aggregator")
T = TypeVar("T")


class EdgeAggregator:
    """One edge serving one federation: uploads in, one signed `EdgeAggregate` per round out."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        store: StateStore,
        link: CloudLink,
        scheme: HEScheme[Any],
        signing_key: SigningKey,
        clock: Clock = utc_now,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        # A plaintext federation (allowed only where every party may see updates) has no secret to keep.
        if scheme.has_secret_key and scheme.requires_secret_to_decrypt:
            raise ValueError("an edge must never hold the federation's secret key; give it the public scheme")
        self.config = config
        self._ledger = RoundLedger(
            store,
            edge_id=config.edge_id,
            federation_id=config.federation_id,
            seal=SumSeal.derive(signing_key, edge_id=config.edge_id, federation_id=config.federation_id),
            retain_round_s=config.retain_round_s,
        )
        self._metrics = metrics or EdgeMetrics()  # a registry nobody serves, unless the app passes its own
        self._forwarder = Forwarder(
            config,
            ledger=self._ledger,
            link=link,
            signing_key=signing_key,
            metrics=self._metrics,
            resum=self._resum,
            settle=lambda round_: self._folder.settle(round_),
            current_round=lambda: self._plan.round if self._plan is not None else None,
            ended=lambda: self._ended is not None,
        )
        self._link = link
        self._scheme = scheme
        self._clock = clock
        self._plan: RoundPlan | None = None
        self._roster: dict[str, ClientInfo] = {}
        self._roster_at: datetime | None = None
        self._roster_fresh = False  # fetched after the current plan was adopted
        self._ended: FederationState | None = None
        self._plan_lock = asyncio.Lock()
        self._roster_lock = asyncio.Lock()
        self.wake = asyncio.Event()  # set when a round may be ready to forward; the ticker waits on it
        self.fold_wake = asyncio.Event()  # set when an upload was stored; the folding loop waits on it
        # TenSEAL work runs off the event loop, one operation at a time: the checks of the request path on
        # one thread, the folder's additions on another, so that an upload never waits behind a fold.
        self._crypto = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-he")
        self._folding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-fold")
        kind = scheme.kind.value
        # The last few uploads checked here, for this process's folder to add without reading them back.
        self._handoff = Handoff(capacity=FOLD_BATCH)
        self._folder = Folder(
            self._ledger,
            scheme=scheme,
            length=config.layout_size,
            run=self._run_fold,
            added=lambda seconds: self._metrics.he_observed("add", kind, seconds),
            observe=self._metrics.phase_observed,
            handoff=self._handoff,
        )
        self._masking = self._masking_stages(config, store, scheme)

    def _masking_stages(
        self, config: EdgeConfig, store: StateStore, scheme: HEScheme[Any]
    ) -> MaskingStages | None:
        """The masking stage machine of a federation that masks below the encryption (None otherwise)."""
        if not config.masking:
            return None
        if scheme.ring_bits is None:
            raise ValueError(
                f"federation {config.federation_id} masks, but its {scheme.kind.value} scheme has no ring"
            )
        cohorts = CohortStore(store, edge_id=config.edge_id, federation_id=config.federation_id)
        return MaskingStages(
            config, cohorts=cohorts, ledger=self._ledger, ring_bits=scheme.ring_bits, run=self._run_crypto
        )

    # -- state ------------------------------------------------------------------------------------------
    @property
    def plan(self) -> RoundPlan | None:
        return self._plan

    @property
    def ended(self) -> FederationState | None:
        return self._ended

    @property
    def ledger(self) -> RoundLedger:
        return self._ledger

    def expected_clients(self, plan: RoundPlan) -> set[str]:
        """The plan's clients enrolled at this edge."""
        eid = self.config.edge_id
        return {c for c in plan.client_ranks if (i := self._roster.get(c)) is not None and i.edge_id == eid}

    def mark_ended(self, state: FederationState | None) -> None:
        if self._ended is None:
            log.warning("federation has ended", extra={"data": {"state": state.value if state else None}})
        self._ended = state or FederationState.STOPPED

    @property
    def folder(self) -> Folder:
        return self._folder

    @property
    def metrics(self) -> EdgeMetrics:
        return self._metrics

    async def close(self) -> None:
        self._crypto.shutdown(wait=False, cancel_futures=True)
        self._folding.shutdown(wait=False, cancel_futures=True)

    # -- uploads ----------------------------------------------------------------------------------------
    async def accept(
        self, update: ClientUpdate, *, federation_id: str | None = None, round_: int | None = None
    ) -> UploadAccepted:
        """Check `update` (against the request path's federation and round when given) and store it for its
        round's sum, or, when it is late and the federation takes late uploads, for the open round's bucket
        for its round; the folder adds it in later. Raises a `ServiceError` on refusal."""
        started = time.perf_counter()
        self._check_path(update, federation_id, round_)
        client = await self._enrolled_client(update.client_id)
        signing = time.perf_counter()
        # Off the event loop: the ciphertext's digest reads every byte (hashlib lets the loop run meanwhile).
        line = await self._run_crypto(partial(_signed_line, client, update))
        signed = time.perf_counter()
        plan, into = await self._plan_for_upload(update.round)
        for basis in {plan.basis_version, into.basis_version if into is not None else plan.basis_version}:
            if update.basis_version != basis:
                raise WrongBasisError(
                    f"upload uses basis version {update.basis_version}, round {plan.round} uses {basis}",
                    field="basis_version",
                )
        self._check_plan_digest(update, plan)
        if update.client_id not in plan.client_ranks:
            raise ForbiddenError(f"client {update.client_id} is not in round {plan.round}'s plan")
        if self._masking is not None and into is None:
            await self._masking.check_upload(plan.round, update.client_id)
        share = plan.noise_share
        if share is not None and not math.isclose(update.noise_share_std or 0.0, share.std, rel_tol=1e-9):
            raise InvalidRequestError(
                f"round {plan.round} asks each client for a noise share of std {share.std:.6g}; this upload "
                f"declares {update.noise_share_std}",
                field="noise_share_std",
            )
        if await self._ledger.nonce_seen(update.nonce):
            raise ReplayError(f"nonce {update.nonce} was already used", field="nonce")
        if update.client_id in await self._ledger.manifest(update.round):
            raise DuplicateUploadError(f"client {update.client_id} is already in round {update.round}'s sum")
        validating = time.perf_counter()
        vector = await self._parse(update.ciphertext)
        checked = time.perf_counter()
        capacity = self._scheme.max_summands
        # Held before the store commits: a folder that sees the manifest line then finds it held.
        held = (into.round if into is not None else update.round, update.round, update.client_id)
        self._handoff.put(*held, digest=line.ciphertext_sha256, vector=vector)
        try:
            if into is not None:
                count = await self._ledger.add_late(update, into=into.round, capacity=capacity, line=line)
            else:
                count = await self._ledger.add(update, capacity=capacity, line=line)
        except BaseException:
            self._handoff.discard(*held, digest=line.ciphertext_sha256)
            raise
        signature, validate = signed - signing, checked - validating
        self._metrics.phase_observed("signature", signature)
        self._metrics.phase_observed("validate", validate)
        self._metrics.phase_observed("checks", checked - started - signature - validate)
        self._metrics.phase_observed("store", time.perf_counter() - checked)
        self.fold_wake.set()
        if into is not None:
            return UploadAccepted(count=count, folded_into_round=into.round)
        target = await self._quorum(plan)
        if target is not None and count >= target:
            self.wake.set()
        return UploadAccepted(count=count)

    async def _quorum(self, plan: RoundPlan) -> int | None:
        """Uploads that close `plan`'s round early, None while the edge cannot tell who may upload: the
        hospitals of the plan enrolled here, or in a masking federation those that shared their seeds."""
        quorum = self.config.spec.quorum
        if self._masking is not None:
            uploaders = await self._masking.uploaders(plan.round)
            return quorum_target(quorum, len(uploaders)) if uploaders is not None else None
        # Without a roster fetched for this plan, `expected` could be too small: wait for it or the deadline.
        return quorum_target(quorum, len(self.expected_clients(plan))) if self._roster_fresh else None

    def _check_plan_digest(self, update: ClientUpdate, plan: RoundPlan) -> None:
        """The hospitals of a round compare plans here: each signs the digest of the plan it trained under,
        and an upload under any other plan than the one this edge holds for its round is refused."""
        if update.plan_sha256 == plan.sha256:
            return
        log.error(
            "hospitals were served different plans: an upload names another plan than this edge's",
            extra={
                "round": plan.round,
                "client_id": update.client_id,
                "code": PlanMismatchError.default_code.value,
                "data": {"plan_sha256": update.plan_sha256, "edge_plan_sha256": plan.sha256},
            },
        )
        raise PlanMismatchError(
            f"{update.client_id} trained under plan {update.plan_sha256}; round {plan.round}'s plan at this "
            f"edge is {plan.sha256}",
            field="plan_sha256",
        )

    async def record_refusal(self, round_: int) -> None:
        """Count a refused upload for the current round's progress (other rounds are only logged, so that
        nobody can make the edge keep counters for arbitrary round numbers)."""
        if self._plan is not None and round_ == self._plan.round:
            await self._ledger.count_refusal(round_)

    def _check_path(self, update: ClientUpdate, federation_id: str | None, round_: int | None) -> None:
        # As the masking routes answer a body for another cohort: a federation this edge does not serve
        # (in the path or the body) is 404, a body for another round than its path's is 409.
        for named in (update.federation_id, federation_id):
            if named is not None and named != self.config.federation_id:
                raise UnknownFederationError(
                    f"this edge serves federation {self.config.federation_id}, not {named}",
                    field="federation_id",
                )
        if round_ is not None and round_ != update.round:
            raise WrongRoundError(f"path names round {round_}, the body {update.round}", field="round")

    async def _enrolled_client(self, client_id: str) -> ClientInfo:
        client = self._roster.get(client_id)
        now = self._clock()
        stale = (
            self._roster_at is None or (now - self._roster_at).total_seconds() >= self.config.roster_refresh_s
        )
        if client is None and stale:
            await self._refresh_roster_quickly()
            client = self._roster.get(client_id)
        if client is None or client.edge_id != self.config.edge_id:
            raise UnauthenticatedError(
                f"client {client_id} is not enrolled at edge {self.config.edge_id}", field="client_id"
            )
        return client

    async def _plan_for_upload(self, round_: int) -> tuple[RoundPlan, RoundPlan | None]:
        """The plan an upload for `round_` was made under and, for a late upload the federation takes, the
        open round it joins (None for an upload in time)."""
        plan = await self._opened_plan(round_)
        if round_ != plan.round:
            late = self.config.spec.late_uploads
            if round_ < plan.round and await self._ledger.closure(round_) is not None:
                if late is None or plan.round - round_ > late.max_staleness:
                    limit = (
                        "" if late is None else f" (late uploads are taken up to {late.max_staleness} late)"
                    )
                    raise RoundClosedError(f"round {round_} is closed at this edge{limit}", field="round")
                origin = await self._ledger.plan(round_)
                if origin is None:
                    raise WrongRoundError(f"this edge no longer holds round {round_}'s plan", field="round")
                await self._check_open(plan, late_for=round_)
                return origin, plan
            raise WrongRoundError(
                f"round {round_} is not open at this edge; the current round is {plan.round}", field="round"
            )
        await self._check_open(plan)
        return plan, None

    async def _opened_plan(self, round_: int) -> RoundPlan:
        """The current plan, once it is at `round_` or later. Before that, `_plan_for` asked the cloud for
        the plan just now and got none newer: the hospital, which holds round `round_`'s plan, is ahead of
        this edge, not late (`RoundNotOpenYetError`: it tries again)."""
        plan = await self._plan_for(round_)
        if plan is None or round_ > plan.round:
            current = "no round" if plan is None else f"round {plan.round}"
            raise RoundNotOpenYetError(
                f"round {round_} is not open at this edge yet (it follows {current}); retry shortly",
                field="round",
                detail={"round": round_, "current_round": plan.round if plan is not None else None},
            )
        return plan

    async def _plan_for(self, round_: int) -> RoundPlan | None:
        """The current plan, asked of the cloud first when `round_` is past it (None before any plan);
        `FederationEndedError` once the federation is over."""
        if self._ended is not None:
            raise FederationEndedError(f"federation {self.config.federation_id} is {self._ended.value}")
        if self._plan is None or round_ > self._plan.round:
            await self._refresh_plan_quickly()
        return self._plan

    async def _check_open(self, plan: RoundPlan, *, late_for: int | None = None) -> None:
        what = f"round {plan.round}" + (
            f", which late uploads for round {late_for} join," if late_for else ""
        )
        closure = await self._ledger.closure(plan.round)
        if closure is not None:
            raise RoundClosedError(f"{what} closed at this edge ({closure.reason.value})")
        # A round is closed before it is forwarded; an outcome without a closure is a closure that did not
        # read back (quarantined): the sum is final, and an upload now would reach no model.
        if await self._ledger.outcome(plan.round) is not None:
            raise RoundClosedError(f"{what} was forwarded from this edge")
        if self._clock() >= aware(plan.deadline):
            raise RoundClosedError(f"{what}'s upload deadline {plan.deadline.isoformat()} has passed")

    async def _parse(self, data: bytes) -> EncryptedVector[Any]:
        return await self._run_crypto(
            lambda: parse_upload(self._scheme, data, length=self.config.layout_size)
        )

    async def fold_pending(self) -> None:
        """Fold the stored uploads of the round the edge follows into its sums (a round another process folds
        is left to it). The ticker needs no wake: its forward folds what is left, waiting for this process's
        folder, and tries again at its next tick while another process's holds the lease."""
        plan = self._plan
        if plan is not None:
            await self._folder.settle(plan.round)

    async def _resum(self, uploads: Sequence[bytes]) -> bytes:
        """The sum of some stored uploads again (`edge_aggregator.fold.sum_uploads`)."""
        return await self._run_crypto(
            lambda: sum_uploads(self._scheme, uploads, length=self.config.layout_size)
        )

    async def _run_crypto(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._crypto, fn)

    async def _run_fold(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._folding, fn)

    # -- plans and roster -------------------------------------------------------------------------------
    async def refresh_plan(self, wait_s: float = 0.0) -> bool:
        """Ask the cloud for a plan later than the current one (long-polling `wait_s`); adopt it if any.
        Raises what the link raises (`FederationNotActiveError` once the federation has ended)."""
        after = self._plan.round if self._plan is not None else None
        plan = await self._link.plan(after_round=after, wait_s=wait_s)
        return plan is not None and await self.adopt(plan)

    async def adopt(self, plan: RoundPlan) -> bool:
        """Follow `plan` if it is later than the current one: store it, refresh the roster, close older rounds
        still open here. Returns whether it was adopted."""
        if plan.federation_id != self.config.federation_id:
            log.warning("ignoring a plan of another federation", extra={"round": plan.round})
            return False
        key = self.config.federation.plan_public_key
        if key is not None:
            try:
                verify(key, plan.signing_payload(), plan.signature)
            except IdentityError as e:
                # Not the cloud's plan (or tampered with on the way): hospitals refuse it too.
                log.error(
                    "ignoring a plan that is not signed with the federation's plan key",
                    extra={"round": plan.round, "data": {"error": str(e)}},
                )
                return False
        try:
            plan.check_view_for(self.config.edge_id)
        except PlanViewError as e:
            # Another edge's view, or the whole round's plan: its hospitals hold another plan digest.
            log.error(
                "ignoring a plan that is not this edge's view",
                extra={"round": plan.round, "data": {"error": str(e)}},
            )
            return False
        async with self._plan_lock:
            if self._plan is not None and plan.round <= self._plan.round:
                return False
            previous = self._plan
            await self._ledger.save_plan(plan)
            self._plan = plan
            self._roster_fresh = False
        if self._masking is not None:
            now = self._clock()
            await self._masking.open(plan.round, now)
            if previous is not None:
                why = f"the cloud opened round {plan.round} before round {previous.round}'s cohort unmasked"
                await self._masking.abandon(previous.round, now, why=why)
        await self._refresh_roster_quickly()
        expected = self.expected_clients(plan)
        log.info(
            "following round plan",
            extra={
                "round": plan.round,
                "edge_id": self.config.edge_id,
                "data": {
                    "expected_clients": len(expected),
                    "quorum_target": quorum_target(self.config.spec.quorum, len(expected)),
                    "deadline": plan.deadline.isoformat(),
                },
            },
        )
        for older in await self._ledger.unclosed():
            if older < plan.round:
                await self._close(older, CloseReason.SUPERSEDED, self._clock())
        self.wake.set()
        return True

    async def refresh_roster(self) -> None:
        async with self._roster_lock:
            plan_round = self._plan.round if self._plan is not None else None
            clients = await self._link.roster()
            self._roster = {c.client_id: c for c in clients if c.edge_id == self.config.edge_id}
            self._roster_at = self._clock()
            current = self._plan.round if self._plan is not None else None
            self._roster_fresh = plan_round == current

    # `asyncio.timeout`, not `wait_for`: on 3.11 `wait_for` swallows a cancellation that arrives as the
    # awaited call completes, which left background tasks running after shutdown.
    async def _refresh_roster_quickly(self) -> None:
        try:
            async with asyncio.timeout(self.config.refresh_timeout_s):
                await self.refresh_roster()
        except (TimeoutError, PeerUnavailableError, PeerRefusedError) as e:
            log.warning("could not refresh the roster", extra={"data": {"error": str(e)}})

    async def _refresh_plan_quickly(self) -> None:
        after = self._plan.round if self._plan is not None else None
        try:
            async with asyncio.timeout(self.config.refresh_timeout_s):
                plan = await self._link.plan(after_round=after, wait_s=0.0)
        except FederationNotActiveError as e:
            self.mark_ended(e.state)
            raise FederationEndedError(str(e)) from e
        except (TimeoutError, PeerUnavailableError, PeerRefusedError) as e:
            log.warning("could not refresh the plan", extra={"data": {"error": str(e)}})
            return
        if plan is not None:
            await self.adopt(plan)

    # -- forwarding -------------------------------------------------------------------------------------
    async def tick(self, now: datetime | None = None) -> None:
        """Close the current round if its quorum or deadline is reached; (re)try every pending forward."""
        now = now or self._clock()
        if self._plan is not None and not self._roster_fresh:
            await self._refresh_roster_quickly()
        await self._keep_plan()
        tried = set()
        if self._plan is not None and self._ended is None:
            tried.add(self._plan.round)
            await self._advance_masking(self._plan.round, now)
            await self.maybe_forward(self._plan.round, now=now)
        for round_ in await self._ledger.pending():
            if round_ not in tried:
                await self._deliver(round_, now)
        if self._ended is not None:
            await self._give_up_held(self._ended, now)

    async def _keep_plan(self) -> None:
        """Store the plan of the round the edge follows again when the store no longer holds it (one that did
        not read back was moved to quarantine): the forward and the round's progress read it there. The
        cloud is its source, and the edge holds the cloud's plan as it adopted it (fetched again at start)."""
        plan = self._plan
        if plan is not None and await self._ledger.plan(plan.round) is None:
            await self._ledger.save_plan(plan)

    async def _give_up_held(self, state: FederationState, now: datetime) -> None:
        """Once the federation has ended no round opens any more: every round that still holds uploads and
        was never closed here (the last one, or one a refused sum was carried into) is closed and its
        uploads counted dropped (`federation_ended`), so that none of them is left uncounted. A closed
        round whose forward is pending keeps being tried: the cloud may have counted it."""
        why = f"the federation ended ({state.value}) before this round was forwarded"
        for round_ in await self._ledger.unclosed():
            await self._close(round_, CloseReason.FEDERATION_ENDED, now)
            await self._forwarder.give_up(round_, now, why=why)

    async def maybe_forward(self, round_: int, *, now: datetime | None = None) -> Outcome | None:
        """Close `round_` if it is due and forward it once. Returns the recorded outcome, or None while the
        round is open or its forward is still pending."""
        now = now or self._clock()
        if await self._ledger.closure(round_) is None:
            reason = await self._due(round_, now)
            if reason is None:
                return None
            await self._close(round_, reason, now)
        return await self._deliver(round_, now)

    async def _deliver(self, round_: int, now: datetime) -> Outcome | None:
        """Forward closed `round_` once; in a masking federation only once its cohort unmasked, with the
        correction, and never when the cohort failed (the outcome says why). Not before its sums hold every
        upload it accepted: the folder runs here if no other process is folding them (else the next tick
        forwards it)."""
        if await self._ledger.outcome(round_) is None and not await self._folder.settle(round_):
            return None
        correction = None
        if self._masking is not None and await self._ledger.outcome(round_) is None:
            await self._advance_masking(round_, now)
            settled = await self._masking.settle(round_, now)
            if settled is None:
                return None
            if isinstance(settled, CohortFailure):
                count = len(await self._ledger.manifest(round_))
                drop = Drop(round=round_, reason=DropReason.MASKING_FAILED, count=count) if count else None
                given_up = Outcome(
                    status=ForwardStatus.SKIPPED,
                    count=count,
                    at=now,
                    detail=f"masking cohort failed at its {settled.stage} stage: {settled.reason}",
                    dropped=(drop,) if drop is not None else (),
                )
                return await self._forwarder.record(round_, given_up)
            correction = settled
        return await self._forwarder.deliver(round_, now, mask_correction=correction)

    async def _due(self, round_: int, now: datetime) -> CloseReason | None:
        plan = self._plan
        if plan is None or plan.round != round_:
            return None
        target = await self._quorum(plan)
        if target is not None and len(await self._ledger.manifest(round_)) >= target:
            return CloseReason.QUORUM
        if now >= aware(plan.deadline):
            return CloseReason.DEADLINE
        return None

    async def _close(self, round_: int, reason: CloseReason, now: datetime) -> Closure:
        closure, wrote = await self._ledger.close(round_, Closure(reason=reason, at=now))
        if wrote:
            count = len(await self._ledger.manifest(round_))
            log.info(
                "round closed to uploads",
                extra={
                    "round": round_,
                    "edge_id": self.config.edge_id,
                    "data": {"reason": reason.value, "count": count},
                },
            )
        return closure

    # -- masking ----------------------------------------------------------------------------------------
    async def masking_post(self, message: Posted, *, federation_id: str, round_: int) -> UploadAccepted:
        """Keep a hospital's message for its masking stage (docs/api.md, "Masking stages"); `count` is how
        many hospitals the stage holds one from. Raises a `ServiceError` on refusal."""
        masking = self._require_masking()
        payload = None if isinstance(message, Consent) else message.signing_payload()
        client = await self._masking_member(message, payload, federation_id=federation_id, round_=round_)
        count = await masking.accept(message, public_key=client.public_key)
        if await self._advance_masking(round_):
            self.wake.set()  # the ticker forwards the round (or gives it up)
        return UploadAccepted(count=count)

    async def masking_read(
        self, request: StageRequest, *, stage: Stage, federation_id: str, round_: int
    ) -> Produced:
        """What masking stage `stage` produced, for a hospital of the round: `StagePendingError` while open."""
        masking = self._require_masking()
        if request.stage is not stage:
            raise InvalidRequestError(
                f"this path reads {stage.value}, the request asks for {request.stage.value}", field="stage"
            )
        await self._masking_member(
            request, request.signing_payload(), federation_id=federation_id, round_=round_
        )
        await self._advance_masking(round_)
        return await masking.read(request)

    def _require_masking(self) -> MaskingStages:
        if self._masking is None:
            raise MaskingOffError(
                f"federation {self.config.federation_id} does not mask below the encryption"
            )
        return self._masking

    async def _masking_member(
        self, message: Posted | StageRequest, payload: bytes | None, *, federation_id: str, round_: int
    ) -> ClientInfo:
        """The enrolled hospital that sent `message` for this edge's cohort of the current round `round_`,
        in its plan; `payload` is what it signed (None: checked by its stage)."""
        if federation_id != self.config.federation_id:
            raise UnknownFederationError(
                f"this edge serves federation {self.config.federation_id}, not {federation_id}",
                field="federation_id",
            )
        ours = CohortId(federation_id=federation_id, round=round_, edge_id=self.config.edge_id)
        cohort = message.cohort
        if cohort != ours:
            raise WrongCohortError(
                f"the message is for cohort {cohort.federation_id}/{cohort.round}/{cohort.edge_id}; this path is "
                f"{ours.federation_id}/{ours.round}/{ours.edge_id}",
                field="cohort",
            )
        client = await self._enrolled_client(message.client_id)
        if payload is not None:
            _check_signature(client, payload, message.signature, what="message")
        plan = await self._opened_plan(round_)
        if plan.round != round_:
            raise WrongRoundError(
                f"round {round_} is not this edge's current round ({plan.round})", field="round"
            )
        if message.client_id not in plan.client_ranks:
            raise ForbiddenError(f"client {message.client_id} is not in round {round_}'s plan")
        return client

    async def _advance_masking(self, round_: int, now: datetime | None = None) -> bool:
        """Close the masking stages of `round_` that are due; whether the cohort settled (unmasked or
        failed), so that the round can be forwarded or given up."""
        if self._masking is None:
            return False
        plan = self._plan
        current = plan is not None and plan.round == round_ and self._roster_fresh
        expected = self.expected_clients(plan) if current and plan is not None else None
        return await self._masking.advance(round_, now or self._clock(), expected=expected)

    # -- progress ---------------------------------------------------------------------------------------
    @property
    def scheme(self) -> HEScheme[Any]:
        """The federation's public scheme (its key and parameters), which bounds an upload's size."""
        return self._scheme

    async def progress(self, round_: int) -> EdgeProgress:
        plan = self._plan if self._plan is not None and self._plan.round == round_ else None
        plan = plan or await self._ledger.plan(round_)
        outcome = await self._ledger.outcome(round_)
        delivered = outcome if outcome is not None and outcome.status is ForwardStatus.DELIVERED else None
        accepted = len(await self._ledger.manifest(round_))
        if not accepted and outcome is not None and outcome.status is not ForwardStatus.CARRIED:
            # Once the forward has an outcome the manifest is final, and it expires `retain_round_s` later
            # (the outcome is kept `EDGE_ROUND_TTL_S`): its count is what the outcome recorded.
            accepted = outcome.count
        return EdgeProgress(
            edge_id=self.config.edge_id,
            expected_clients=len(self.expected_clients(plan)) if plan is not None else 0,
            uploads_accepted=accepted,
            uploads_refused=await self._ledger.refused(round_),
            forwarded=delivered is not None,
            bytes_received=await self._ledger.bytes_received(round_),
            late_accepted=sum(len(b) for b in (await self._ledger.late_buckets(round_)).values()),
            forwarded_at=delivered.at if delivered is not None else None,
            uploads_dropped=await self._ledger.dropped(round_),
            carried_into_round=outcome.carried_into if outcome is not None else None,
        )


def _signed_line(client: ClientInfo, update: ClientUpdate) -> Contribution:
    """`update`'s manifest line, once the upload's signature and the line's verify with `client`'s key: the
    cloud verifies the line too, and one it would refuse must not enter the sum. The ciphertext's digest,
    which both cover, is computed once."""
    digest = update.ciphertext_sha256
    _check_signature(
        client, update.signing_payload(ciphertext_sha256=digest), update.signature, what="upload"
    )
    line = update.manifest_line(ciphertext_sha256=digest)
    payload = line.signing_payload(federation_id=update.federation_id, round_=update.round)
    _check_signature(
        client, payload, update.contribution_signature, what="manifest line", field="contribution_signature"
    )
    return line


def _check_signature(
    client: ClientInfo, payload: bytes, signature: bytes, *, what: str, field: str = "signature"
) -> None:
    try:
        verify(client.public_key, payload, signature)
    except (IdentityError, ValueError) as e:
        raise BadSignatureError(
            f"signature of {client.client_id}'s {what} does not verify with its enrolled key", field=field
        ) from e
