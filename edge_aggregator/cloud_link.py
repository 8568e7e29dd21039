"""`CloudLink`: everything the edge asks of the cloud, behind one interface.

`HttpCloudLink` speaks docs/api.md over `services.http.Peer` (timeouts, retries with backoff). Tests and
embedded setups can give the edge any other implementation.
"""

from __future__ import annotations

import logging
import ssl
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import httpx
from pydantic import TypeAdapter

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
from services.clock import OffsetClock, cloud_sample
from services.enrolling import enrol
from services.http import Peer, PeerRefusedError, PeerUnavailableError
from services.identity import SigningKey

log = logging.getLogger("edge_aggregator.cloud_link")

_ROSTER = TypeAdapter(list[ClientInfo])
# A long-poll's answer may take `wait_s`; the read timeout must outlast it by a margin.
_LONG_POLL_MARGIN_S = 30.0


class FederationNotActiveError(RuntimeError):
    """The cloud answered 410: the federation has ended and will publish no more plans."""

    def __init__(self, state: FederationState | None, message: str = "") -> None:
        what = state.value if state is not None else "not active"
        super().__init__(f"federation is {what}" + (f": {message}" if message else ""))
        self.state = state


class TokenShelf(Protocol):
    """Where replicas of one edge share its live API token (`edge_aggregator.credentials.StoredToken`)."""

    async def load(self) -> str | None: ...

    async def save(self, token: str) -> None: ...


class CloudLink(ABC):
    """The edge's view of the cloud. Errors: `PeerUnavailableError` (try again later),
    `PeerRefusedError` (the cloud said no), `FederationNotActiveError` (from `plan`)."""

    @abstractmethod
    async def enrol(self, enrolment: EdgeEnrolment, key: SigningKey) -> Enrolled:
        """Register this edge, proving it holds `key` (the private half of `enrolment.public_key`); idempotent
        for the same key. Later calls use the token it returns."""

    @abstractmethod
    async def federation(self) -> FederationInfo: ...

    @abstractmethod
    async def public_context(self) -> bytes:
        """The federation's public HE material (`HEScheme.public_bytes()`)."""

    @abstractmethod
    async def plan(self, after_round: int | None, wait_s: float) -> RoundPlan | None:
        """The current plan once its round is greater than `after_round` (any plan if None), waiting up to
        `wait_s` seconds; None if none came in time."""

    @abstractmethod
    async def roster(self) -> list[ClientInfo]:
        """The clients enrolled at this edge."""

    @abstractmethod
    async def forward(self, aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        """Deliver a signed aggregate. Returns once the cloud holds it (a repeat of a delivered aggregate
        under the same idempotency key also returns). `within_s`: no new attempt after that many seconds
        (the round's forward budget left; one attempt at least)."""

    async def close(self) -> None:
        return None


class HttpCloudLink(CloudLink):
    """`CloudLink` over HTTP. Enrols with the single-use enrolment token issued for this edge's id and a
    signed challenge (`services.enrolling`), then uses the API token it gets back; if the cloud stops knowing
    that token (401: another replica enrolled, or the token was revoked), it enrols again once, with the
    signed challenge alone, and repeats the request.

    Replicas of one edge share a `TokenShelf` in their store: the cloud keeps one live token per edge, so a
    replica that enrols revokes the others' token. A replica therefore starts with the shelf's token if
    there is one, and on a 401 first tries the shelf's token (another replica enrolled since) before it
    enrols again itself.

    With a `clock`, every plan poll measures the offset of the cloud's time to `clock.local` from the
    cloud's two time stamps and the poll's own (`services.clock.OffsetSample`), gives it to `clock` (which
    then reads the cloud's time, its offset filtered for slow answers: the edge's deadlines run on it) and
    reports the offset in use to the cloud with the next poll.
    """

    def __init__(
        self,
        cloud_url: str,
        *,
        federation_id: str,
        enrolment_token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | None = None,
        attempts: int = 8,
        give_up_after_s: float = 300.0,
        tokens: TokenShelf | None = None,
        clock: OffsetClock | None = None,
    ) -> None:
        self._fid = federation_id
        self._tokens = tokens
        self._clock = clock
        self._enrolment_token = enrolment_token
        self._enrolment: tuple[EdgeEnrolment, SigningKey] | None = None
        self._peer = Peer(
            cloud_url.rstrip("/"),
            attempts=attempts,
            give_up_after_s=give_up_after_s,
            transport=transport,
            verify=verify,
        )

    async def enrol(self, enrolment: EdgeEnrolment, key: SigningKey) -> Enrolled:
        shared = await self._tokens.load() if self._tokens is not None else None
        if shared is not None:
            # A replica (or this edge before a restart) enrolled already: use its token; a 401 later on
            # makes this replica enrol for itself.
            self._peer.set_token(shared)
            self._enrolment = (enrolment, key)
            return Enrolled(
                federation_id=self._fid, subject=enrolment.edge_id, role=Role.EDGE, api_token=shared
            )
        return await self._enrol_anew(enrolment, key)

    async def _enrol_anew(self, enrolment: EdgeEnrolment, key: SigningKey) -> Enrolled:
        enrolled = await enrol(self._peer, self._fid, enrolment, key, enrolment_token=self._enrolment_token)
        self._peer.set_token(enrolled.api_token)
        self._enrolment = (enrolment, key)
        if self._tokens is not None:
            await self._tokens.save(enrolled.api_token)
        return enrolled

    async def federation(self) -> FederationInfo:
        response = await self._authorised(lambda: self._peer.request("GET", f"/federations/{self._fid}"))
        return FederationInfo.model_validate_json(response.content)

    async def public_context(self) -> bytes:
        response = await self._authorised(
            lambda: self._peer.request("GET", f"/federations/{self._fid}/public-context")
        )
        return response.content

    async def plan(self, after_round: int | None, wait_s: float) -> RoundPlan | None:
        params: dict[str, float | int] = {"wait": wait_s}
        if after_round is not None:
            params["after_round"] = after_round

        async def poll() -> httpx.Response:
            clock = self._clock
            if clock is not None and clock.offset_s is not None:
                params["clock_offset_s"] = clock.offset_s
            sent = clock.local() if clock is not None else None
            response = await self._peer.request(
                "GET", f"/federations/{self._fid}/plan", params=params, timeout=wait_s + _LONG_POLL_MARGIN_S
            )
            if clock is not None and sent is not None:
                self._measure(clock, response, sent)
            return response

        try:
            response = await self._authorised(poll)
        except PeerRefusedError as e:
            if e.status != 410:
                raise
            raise FederationNotActiveError(await self._state_after_end(), e.message) from e
        if response.status_code == 204 or not response.content:
            return None
        return RoundPlan.model_validate_json(response.content)

    async def roster(self) -> list[ClientInfo]:
        response = await self._authorised(
            lambda: self._peer.request(
                "GET", f"/federations/{self._fid}/clients", params={"edge_id": self._edge_id()}
            )
        )
        return _ROSTER.validate_json(response.content)

    async def forward(self, aggregate: EdgeAggregate, *, within_s: float | None = None) -> None:
        # 202: taken; 200: the cloud already holds this very aggregate (same key and digest), counted once.
        # A 409 means the cloud holds a *different* aggregate of ours for the round: that is not delivery.
        await self._authorised(
            lambda: self._peer.request(
                "POST",
                f"/federations/{self._fid}/rounds/{aggregate.round}/aggregates",
                content=aggregate.model_dump_json().encode(),
                headers={"Content-Type": "application/json", "Idempotency-Key": aggregate.idempotency_key},
                give_up_after_s=within_s,
            )
        )

    async def close(self) -> None:
        await self._peer.close()

    # -- helpers ------------------------------------------------------------------------------------
    def _edge_id(self) -> str:
        if self._enrolment is None:
            raise RuntimeError("HttpCloudLink.enrol must succeed before other calls")
        return self._enrolment[0].edge_id

    async def _authorised(self, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        try:
            return await call()
        except PeerRefusedError as e:
            if e.status != 401 or self._enrolment is None:
                raise
        shared = await self._tokens.load() if self._tokens is not None else None
        if shared is not None and shared != self._peer.token:
            log.info("another replica of this edge enrolled again; using its token")
            self._peer.set_token(shared)
            try:
                return await call()
            except PeerRefusedError as e:
                if e.status != 401:
                    raise
        log.warning(
            "cloud no longer accepts this edge's token; enrolling again", extra={"code": "unauthenticated"}
        )
        await self._enrol_anew(*self._enrolment)
        return await call()

    @staticmethod
    def _measure(clock: OffsetClock, response: httpx.Response, sent: datetime) -> None:
        """Take the offset of the cloud's time to `clock`'s from a plan poll's answer (sent at `sent`)."""
        sample = cloud_sample(response.headers, sent=sent, received=clock.local())
        if sample is not None and clock.measured(sample):
            log.info(
                "clock offset to the cloud measured",
                extra={"data": {"offset_s": round(clock.offset_s or 0.0, 3), "error_s": clock.error_s}},
            )

    async def _state_after_end(self) -> FederationState | None:
        try:
            return (await self.federation()).state
        except (PeerRefusedError, PeerUnavailableError, ValueError):
            return None
