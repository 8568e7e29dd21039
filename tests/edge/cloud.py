"""An in-memory `CloudLink` for the edge's tests: a small cloud that keeps what the edge sends it.

It is an implementation of our own interface, not a mock of a library: it enrols, serves a plan (with a
real long-poll), a roster and the public HE context, and takes forwards the way docs/api.md describes
(the same idempotency key and digest again is counted once; another body is a 409).
"""

from __future__ import annotations

import asyncio
import hashlib

from edge_aggregator.cloud_link import CloudLink, FederationNotActiveError
from protocol.messages import (
    ClientInfo,
    EdgeAggregate,
    EdgeEnrolment,
    Enrolled,
    FederationInfo,
    FederationState,
    Role,
    RoundPlan,
)
from services.http import PeerRefusedError, PeerUnavailableError
from services.identity import SigningKey


class InMemoryCloud(CloudLink):
    def __init__(self, info: FederationInfo, public_context: bytes) -> None:
        self.info = info
        self._public = public_context
        self._plan: RoundPlan | None = None
        self.published: dict[int, RoundPlan] = {}  # every plan it served, by round
        self._changed = asyncio.Condition()
        self.clients: dict[str, ClientInfo] = {}
        self.enrolments: list[EdgeEnrolment] = []
        self.attempts: list[EdgeAggregate] = []
        self.delivered: dict[str, EdgeAggregate] = {}
        self.fail_forwards = 0
        self.closed_rounds: set[int] = set()  # forwards for these are refused as the cloud refuses them
        self.within: list[float | None] = []  # each forward's `within_s`
        self.fail_plans = 0  # plan polls to answer with a connection error (a cloud the edge cannot reach)
        self.polls_waiting = 0  # long-polls parked until a plan is published
        self.ended: FederationState | None = None

    # -- what a test does to the cloud --------------------------------------------------------------
    def set_plan(self, plan: RoundPlan) -> None:
        """The plan in force before any edge asks (set up only: it wakes no long-poll)."""
        self._plan = self.published[plan.round] = plan

    async def publish(self, plan: RoundPlan, *, notify: bool = True) -> None:
        """Open a round. With `notify=False` a waiting long-poll does not see it (the edge must ask)."""
        async with self._changed:
            self._plan = self.published[plan.round] = plan
            if notify:
                self._changed.notify_all()

    async def end(self, state: FederationState) -> None:
        async with self._changed:
            self.ended = state
            self._changed.notify_all()

    def plan_sha256(self, round_: int) -> str | None:
        """The digest of the plan served for `round_` (what its hospitals sign into their uploads)."""
        plan = self.published.get(round_)
        return plan.sha256 if plan is not None else None

    def edge_public_key(self, edge_id: str) -> bytes:
        return next(e.public_key for e in reversed(self.enrolments) if e.edge_id == edge_id)

    # -- CloudLink --------------------------------------------------------------------------------
    async def enrol(self, enrolment: EdgeEnrolment, key: SigningKey) -> Enrolled:
        self.enrolments.append(enrolment)
        return Enrolled(
            federation_id=self.info.spec.federation_id,
            subject=enrolment.edge_id,
            role=Role.EDGE,
            api_token="edge-api-" + hashlib.sha256(enrolment.public_key).hexdigest()[:24],
        )

    async def federation(self) -> FederationInfo:
        return self.info

    async def public_context(self) -> bytes:
        return self._public

    async def plan(self, after_round: int | None, wait_s: float) -> RoundPlan | None:
        if self.fail_plans > 0:
            self.fail_plans -= 1
            raise PeerUnavailableError("GET plan: connection refused (test)")
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        async with self._changed:
            while True:
                if self.ended is not None:
                    raise FederationNotActiveError(self.ended)
                plan = self._plan
                if plan is not None and (after_round is None or plan.round > after_round):
                    return plan
                remaining = until - loop.time()
                if remaining <= 0:
                    return None
                self.polls_waiting += 1
                try:
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    return None
                finally:
                    self.polls_waiting -= 1

    async def roster(self) -> list[ClientInfo]:
        edge_id = self.enrolments[-1].edge_id
        return [c for c in self.clients.values() if c.edge_id == edge_id]

    async def forward(self, aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        self.attempts.append(aggregate)
        self.within.append(within_s)
        if self.fail_forwards > 0:
            self.fail_forwards -= 1
            raise PeerUnavailableError("POST aggregates: connection refused (test)")
        if aggregate.round in self.closed_rounds:
            raise PeerRefusedError(409, "round_closed", f"round {aggregate.round} is over", detail={})
        held = self.delivered.get(aggregate.idempotency_key)
        if held is None:
            self.delivered[aggregate.idempotency_key] = aggregate
        elif held.signing_payload() != aggregate.signing_payload():
            raise PeerRefusedError(409, "duplicate_upload", "another aggregate of this edge for this round")
