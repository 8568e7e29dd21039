"""The edge's side of masking below the encryption (`protocol.secagg`): one stage machine per round, whose
every accepted message and every closed stage lives in the store (`CohortStore`), so that a restarted
edge goes on where it stopped.

The stages of a round's cohort, each closed once and in order (Bonawitz et al., CCS 2017, rounds 0 to 4;
docs/api.md, "Masking stages"):
1. adverts: closed when every hospital of the round's plan enrolled here advertised, or `masking_stage_s`
   after it opened. The adverts are the roster, which needs at least `max(2, k)` of them.
2. shares: closed when every roster member shared, or at the timeout. Each sender gets its inbox
   (`protocol.secagg.route`); only senders may upload, since only their masks can be removed.
3. uploads: the round itself (`EdgeAggregator`: quorum over the senders, or the deadline). The hospitals
   in its manifest when it closed are the survivors, at least `k` of them.
4. consents: closed when every survivor signed the survivor list, or at the timeout; a majority of the
   roster must have signed. The list and the signatures are the unmask request.
5. answers: closed when every consenter answered, or at the timeout. The answers give the correction
   (`protocol.secagg.correction`) that the forwarder sends beside the sum.
A stage that cannot go on (too few hospitals, shares that do not rebuild a seed) fails the cohort: the
edge logs why and forwards nothing of the round. Timeouts run on the injected clock; the edge's tick
(and every accepted message) moves the machine on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from edge_aggregator.cohort_store import CohortFailure, CohortStore, Collected
from edge_aggregator.config import EdgeConfig
from edge_aggregator.errors import (
    BadSignatureError,
    CohortFailedError,
    NotInCohortError,
    StagePendingError,
)
from edge_aggregator.ledger import RoundLedger
from protocol.secagg import (
    Cohort,
    CohortId,
    Consent,
    Inbox,
    KeyAdvert,
    Roster,
    SecAggError,
    ShareBundle,
    Stage,
    StageRequest,
    SurvivorSet,
    UnmaskRequest,
    UnmaskShares,
    check_public_key,
    correction,
    residue_bytes,
    route,
)
from services.errors import InvalidRequestError
from services.identity import IdentityError, verify

log = logging.getLogger("edge_aggregator")

Posted = KeyAdvert | ShareBundle | Consent | UnmaskShares
Produced = Roster | Inbox | SurvivorSet | UnmaskRequest
#: Runs CPU-bound work off the event loop (the edge's crypto thread).
Runner = Callable[[Callable[[], bytes]], Awaitable[bytes]]
Step = Callable[[], Awaitable[bool]]


class MaskingStages:
    """The masking cohorts of one edge and federation. Callers authenticate each message first (enrolled
    here, in the round's plan, signed for this cohort); this class decides what each stage accepts."""

    def __init__(
        self, config: EdgeConfig, *, cohorts: CohortStore, ledger: RoundLedger, ring_bits: int, run: Runner
    ) -> None:
        self.config = config
        self._cohorts = cohorts
        self._ledger = ledger
        self._bits = ring_bits
        self._run = run
        self._k = config.spec.min_clients_per_edge
        self._stage = timedelta(seconds=config.masking_stage_s)
        # One stage transition at a time in this process (SET NX orders replicas).
        self._lock = asyncio.Lock()
        # What a closed stage produced never changes: kept per round once read.
        self._rosters: dict[int, Cohort] = {}
        self._inboxes: dict[int, dict[str, Inbox]] = {}
        self._requests: dict[int, UnmaskRequest] = {}

    def cohort_id(self, round_: int) -> CohortId:
        return CohortId(federation_id=self.config.federation_id, round=round_, edge_id=self.config.edge_id)

    async def open(self, round_: int, now: datetime) -> None:
        """Open round `round_`'s adverts stage (a no-op if it opened before) and forget older rounds' caches."""
        await self._cohorts.open(round_, now)
        for cache in (self._rosters, self._inboxes, self._requests):
            for old in [r for r in cache if r < round_ - 1]:
                del cache[old]

    # -- messages -------------------------------------------------------------------------------------
    async def accept(self, message: Posted, *, public_key: bytes) -> int:
        """Keep an authenticated hospital's message for its stage; how many hospitals the stage holds one
        from. Raises a `ServiceError` naming why a message is refused."""
        round_ = message.cohort.round
        await self._check_alive(round_)
        body = message.model_dump_json().encode()
        client_id = message.client_id
        match message:
            case KeyAdvert():
                if message.share_key == message.mask_key:
                    raise InvalidRequestError(
                        "an advert's share_key and mask_key must differ", field="mask_key"
                    )
                for field in ("share_key", "mask_key"):
                    try:
                        check_public_key(getattr(message, field))
                    except SecAggError as e:
                        raise InvalidRequestError(
                            f"{client_id}'s {field} agrees no secret with anyone: {e}", field=field
                        ) from e
                claims = [self._cohorts.key_claim(round_, k) for k in (message.share_key, message.mask_key)]
                return await self._cohorts.put(round_, Collected.ADVERTS, client_id, body, claims=claims)
            case ShareBundle():
                cohort = await self._roster(round_)
                _check_member(client_id in cohort.adverts, f"{client_id} is not in round {round_}'s roster")
                neighbours = set(cohort.neighbours[client_id])
                if set(message.sealed) != neighbours:
                    raise InvalidRequestError(
                        f"{client_id}'s shares must be sealed to exactly its {len(neighbours)} neighbours",
                        field="sealed",
                    )
                return await self._cohorts.put(round_, Collected.SHARES, client_id, body)
            case Consent():
                survivors = await self._survivors(round_)
                _check_member(
                    client_id in survivors.survivors, f"{client_id} is not a survivor of round {round_}"
                )
                try:
                    verify(public_key, survivors.signing_payload(), message.signature)
                except IdentityError as e:
                    raise BadSignatureError(
                        f"{client_id}'s consent is not its signature of round {round_}'s survivor list",
                        field="signature",
                    ) from e
                return await self._cohorts.put(round_, Collected.CONSENTS, client_id, body)
            case UnmaskShares():
                request = await self._request(round_)
                alive = set(request.survivor_set.survivors)
                _check_member(client_id in alive, f"{client_id} is not a survivor of round {round_}")
                senders = set(await self._cohorts.senders(round_, Collected.SHARES))
                _check_answer(await self._roster(round_), message, survivors=alive, senders=senders)
                return await self._cohorts.put(round_, Collected.ANSWERS, client_id, body)

    async def read(self, request: StageRequest) -> Produced:
        """What a closed stage produced, for an authenticated hospital of the round: `StagePendingError`
        while the stage is open."""
        round_ = request.cohort.round
        await self._check_alive(round_)
        match request.stage:
            case Stage.ROSTER:
                return (await self._roster(round_)).roster
            case Stage.INBOX:
                inbox = (await self._all_inboxes(round_)).get(request.client_id)
                if inbox is None:
                    raise NotInCohortError(f"{request.client_id} sent no shares to round {round_}'s cohort")
                return inbox
            case Stage.SURVIVORS:
                return await self._survivors(round_)
            case Stage.UNMASK_REQUEST:
                return await self._request(round_)

    async def check_upload(self, round_: int, client_id: str) -> None:
        """Raise unless `client_id` may upload a masked update to round `round_`: only a hospital whose
        shares were routed holds masks the cohort can remove."""
        await self._check_alive(round_)
        if await self._cohorts.closed(round_, Collected.SHARES) is None:
            raise StagePendingError(
                f"round {round_}'s cohort is still collecting shares: upload once your inbox is ready"
            )
        _check_member(
            client_id in await self._cohorts.senders(round_, Collected.SHARES),
            f"{client_id} sent no shares to round {round_}'s cohort: its masks could never be removed",
        )

    async def uploaders(self, round_: int) -> list[str] | None:
        """The hospitals that may upload to round `round_` (those that shared), None until shares closed."""
        if await self._cohorts.closed(round_, Collected.SHARES) is None:
            return None
        return await self._cohorts.senders(round_, Collected.SHARES)

    # -- stage transitions ----------------------------------------------------------------------------
    async def advance(self, round_: int, now: datetime, *, expected: set[str] | None) -> bool:
        """Close every stage of round `round_` that is due (`expected`: the hospitals the adverts stage
        waits for, None while the edge does not know them). Returns whether the cohort is settled: its
        answers closed or it failed, so that its round can be forwarded or given up."""
        async with self._lock:
            if await self._cohorts.failure(round_) is not None:
                return True
            closed = await self._cohorts.closures(round_)
            steps: list[tuple[Collected, Step]] = [
                (Collected.ADVERTS, lambda: self._close_adverts(round_, closed, now, expected)),
                (Collected.SHARES, lambda: self._close_shares(round_, closed, now)),
                (Collected.CONSENTS, lambda: self._close_consents(round_, closed, now)),
                (Collected.ANSWERS, lambda: self._close_answers(round_, closed, now)),
            ]
            for stage, step in steps:
                try:
                    if not await step():
                        return False
                except SecAggError as e:
                    await self._fail(round_, stage, str(e), now)
                    return True
                except CohortFailedError:
                    return True
            return True

    # Each step closes its stage when due and checks what the stage produced; False while it stays open,
    # `SecAggError` when the cohort cannot go on.
    async def _close_adverts(
        self, round_: int, closed: dict[Collected, datetime], now: datetime, expected: set[str] | None
    ) -> bool:
        opened = await self._cohorts.open(round_, now)
        if not await self._close_if_due(
            round_, Collected.ADVERTS, closed, now, since=opened, waiting=expected
        ):
            return False
        members = len((await self._roster(round_)).members)
        if members < max(2, self._k):
            raise SecAggError(
                f"the roster closed with {members} adverts; a cohort needs at least {max(2, self._k)}"
            )
        return True

    async def _close_shares(self, round_: int, closed: dict[Collected, datetime], now: datetime) -> bool:
        members = set((await self._roster(round_)).members)
        since = closed[Collected.ADVERTS]
        if not await self._close_if_due(round_, Collected.SHARES, closed, now, since=since, waiting=members):
            return False
        senders = len(await self._all_inboxes(round_))
        if senders < max(2, self._k):
            raise SecAggError(f"{senders} hospitals sent shares; a cohort needs at least {max(2, self._k)}")
        return True

    async def _close_consents(self, round_: int, closed: dict[Collected, datetime], now: datetime) -> bool:
        closure = await self._ledger.closure(round_)  # consents open when the round closes to uploads
        if closure is None:
            return False
        cohort = await self._roster(round_)
        survivors = await self._survivors(round_)
        cohort.check_survivors(survivors)
        waiting = set(survivors.survivors)
        if not await self._close_if_due(
            round_, Collected.CONSENTS, closed, now, since=closure.at, waiting=waiting
        ):
            return False
        signed = len((await self._request(round_)).consents)
        if signed < cohort.majority():
            raise SecAggError(
                f"{signed} survivors signed the survivor list; unmasking needs a majority of the roster, "
                f"{cohort.majority()}"
            )
        return True

    async def _close_answers(self, round_: int, closed: dict[Collected, datetime], now: datetime) -> bool:
        waiting = set((await self._request(round_)).consents)
        since = closed[Collected.CONSENTS]
        return await self._close_if_due(round_, Collected.ANSWERS, closed, now, since=since, waiting=waiting)

    async def settle(self, round_: int, now: datetime) -> bytes | CohortFailure | None:
        """The correction to forward with round `round_`'s sum (`residue_bytes`), the failure that stops
        it, or None while the cohort is still unmasking."""
        failure = await self._cohorts.failure(round_)
        if failure is not None:
            return failure
        held = await self._cohorts.correction(round_)
        if held is not None or await self._cohorts.closed(round_, Collected.ANSWERS) is None:
            return held
        request = await self._request(round_)
        cohort = await self._roster(round_)
        senders = await self._cohorts.senders(round_, Collected.SHARES)
        answers = list((await self._cohorts.messages(round_, Collected.ANSWERS, UnmaskShares)).values())
        length, bits = self.config.layout_size, self._bits
        try:
            data = await self._run(
                lambda: residue_bytes(
                    correction(
                        cohort,
                        senders=senders,
                        survivors=request.survivor_set.survivors,
                        answers=answers,
                        length=length,
                        bits=bits,
                    ),
                    bits,
                )
            )
        except SecAggError as e:
            return await self._fail(round_, Collected.ANSWERS, str(e), now)
        return await self._cohorts.save_correction(round_, data)

    async def abandon(self, round_: int, now: datetime, *, why: str) -> None:
        """Fail round `round_`'s cohort unless it has unmasked (the cloud moved on without it)."""
        if await self._cohorts.correction(round_) is None and await self._cohorts.failure(round_) is None:
            closed = await self._cohorts.closures(round_)
            stage = next((s for s in Collected if s not in closed), Collected.ANSWERS)
            await self._fail(round_, stage, why, now)

    async def _close_if_due(
        self,
        round_: int,
        stage: Collected,
        closed: dict[Collected, datetime],
        now: datetime,
        *,
        since: datetime,
        waiting: set[str] | None,
    ) -> bool:
        """Close `stage` when everyone in `waiting` posted, or `masking_stage_s` after `since` (when it
        opened). Returns whether it is closed."""
        if stage in closed:
            return True
        arrived = set(await self._cohorts.senders(round_, stage))
        timed_out = now >= since + self._stage
        if not (waiting and waiting <= arrived) and not timed_out:
            return False
        closed[stage] = await self._cohorts.close(round_, stage, now)
        log.info(
            f"masking {stage.value} closed",
            extra={
                "round": round_,
                "edge_id": self.config.edge_id,
                "data": {"received": len(arrived), "waited_for": len(waiting or ()), "timed_out": timed_out},
            },
        )
        return True

    async def _fail(self, round_: int, stage: Collected, reason: str, now: datetime) -> CohortFailure:
        failure = await self._cohorts.fail(round_, CohortFailure(stage=stage.value, reason=reason, at=now))
        log.error(
            "masking cohort failed: nothing of the round is forwarded",
            extra={
                "round": round_,
                "edge_id": self.config.edge_id,
                "code": CohortFailedError.default_code.value,
                "data": {"stage": failure.stage, "reason": failure.reason},
            },
        )
        return failure

    # -- what closed stages produced ------------------------------------------------------------------
    async def _check_alive(self, round_: int) -> None:
        failure = await self._cohorts.failure(round_)
        if failure is not None:
            raise CohortFailedError(
                f"round {round_}'s masking cohort failed at its {failure.stage} stage: {failure.reason}"
            )

    async def _roster(self, round_: int) -> Cohort:
        cached = self._rosters.get(round_)
        if cached is not None:
            return cached
        if await self._cohorts.closed(round_, Collected.ADVERTS) is None:
            raise StagePendingError(f"round {round_}'s roster is not closed yet")
        adverts = list((await self._cohorts.messages(round_, Collected.ADVERTS, KeyAdvert)).values())
        roster = Roster(cohort=self.cohort_id(round_), adverts=sorted(adverts, key=lambda a: a.client_id))
        cohort = self._rosters[round_] = Cohort(roster, self._k)
        return cohort

    async def _all_inboxes(self, round_: int) -> dict[str, Inbox]:
        cached = self._inboxes.get(round_)
        if cached is not None:
            return cached
        cohort = await self._roster(round_)
        if await self._cohorts.closed(round_, Collected.SHARES) is None:
            raise StagePendingError(f"round {round_}'s shares are still being collected")
        bundles = list((await self._cohorts.messages(round_, Collected.SHARES, ShareBundle)).values())
        inboxes = self._inboxes[round_] = route(cohort, bundles)
        return inboxes

    async def _survivors(self, round_: int) -> SurvivorSet:
        if await self._ledger.closure(round_) is None:
            raise StagePendingError(f"round {round_} is still open to uploads: no survivor list yet")
        manifest = await self._ledger.manifest(round_)
        return SurvivorSet(cohort=self.cohort_id(round_), survivors=sorted(manifest))

    async def _request(self, round_: int) -> UnmaskRequest:
        cached = self._requests.get(round_)
        if cached is not None:
            return cached
        if await self._cohorts.closed(round_, Collected.CONSENTS) is None:
            raise StagePendingError(f"round {round_}'s consents are still being collected")
        held = await self._cohorts.messages(round_, Collected.CONSENTS, Consent)
        consents = {client_id: consent.signature for client_id, consent in held.items()}
        request = UnmaskRequest(survivor_set=await self._survivors(round_), consents=consents)
        self._requests[round_] = request
        return request


def _check_member(member: bool, message: str) -> None:
    if not member:
        raise NotInCohortError(message)


def _check_answer(cohort: Cohort, answer: UnmaskShares, *, survivors: set[str], senders: set[str]) -> None:
    """An answer reveals, for neighbours only, self-mask shares of survivors and mask-key shares of senders
    that did not survive: anything else (both shares of one hospital above all) is refused before it can
    reach the correction."""
    holder = answer.client_id
    neighbours = set(cohort.neighbours[holder])
    for owner in answer.seed_shares:
        if owner not in survivors or owner not in neighbours:
            raise InvalidRequestError(
                f"{holder} reveals a self-mask share of {owner}, which is not a surviving neighbour",
                field="seed_shares",
            )
    for owner in answer.key_shares:
        if owner in survivors or owner not in senders or owner not in neighbours:
            raise InvalidRequestError(
                f"{holder} reveals a mask-key share of {owner}, which is not a neighbour that shared and "
                "dropped",
                field="key_shares",
            )
