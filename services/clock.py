"""Time as the services see it: injected, so deadlines can be tested without waiting.

Two kinds of clock. A `Clock` is a process's own (`utc_now`, or a test's). A `TimeSource` is the one time
that deadlines are opened and checked on: the cloud's replicas read it from their shared store
(`store_time`, Redis `TIME`), so a replica whose own clock is off neither opens a round late nor closes
one early. An edge has no access to that store: it reads its own clock corrected by the offset it
measures to the cloud's time whenever it polls for a plan (`OffsetClock`, `clock_offset_s`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from protocol.messages import CLOUD_ANSWERED_AT_HEADER, CLOUD_RECEIVED_AT_HEADER

if TYPE_CHECKING:
    from services.store import StateStore

Clock = Callable[[], datetime]
TimeSource = Callable[[], Awaitable[datetime]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def store_time(store: StateStore) -> TimeSource:
    """The time source for deadlines: the store's clock, the same for every process that shares it."""
    return store.time


def clock_offset_s(
    *, sent: datetime, received: datetime, peer_received: datetime, peer_answered: datetime
) -> float:
    """How far the peer's clock is ahead of ours, in seconds, from one request: ours stamped `sent` and
    `received`, the peer's `peer_received` and `peer_answered` (NTP's on-wire offset, RFC 5905 section 8).

    With a peer that answers at once this is the peer's time less the midpoint of `sent` and `received`;
    the peer's two stamps keep a long-poll's wait out of it. The error is at most half the network's round
    trip (less the peer's wait), and nothing when the two directions take equal time."""
    return ((peer_received - sent) + (peer_answered - received)).total_seconds() / 2


def cloud_offset_s(headers: Mapping[str, str], *, sent: datetime, received: datetime) -> float | None:
    """The offset of the cloud's time to ours from its answer to a plan poll we `sent` and `received`
    (`clock_offset_s` of the answer's two time stamps); None from a cloud that does not stamp its answers."""
    try:
        peer_received = datetime.fromisoformat(headers[CLOUD_RECEIVED_AT_HEADER])
        peer_answered = datetime.fromisoformat(headers[CLOUD_ANSWERED_AT_HEADER])
    except (KeyError, ValueError):
        return None
    return clock_offset_s(
        sent=sent, received=received, peer_received=peer_received, peer_answered=peer_answered
    )


class OffsetClock:
    """A process's clock corrected by its last measured offset to another's (an edge's or a hospital's to
    the cloud's): calling it reads the other clock's time as well as this process can tell. Until a first
    measurement the offset is zero and `offset_s` None."""

    #: A measurement that moved by this much since the last one worth a log line is worth one again.
    LOG_STEP_S = 1.0

    def __init__(self, local: Clock = utc_now) -> None:
        self.local = local
        self.offset_s: float | None = None
        self._noted_s: float | None = None

    def __call__(self) -> datetime:
        return self.local() + timedelta(seconds=self.offset_s or 0.0)

    def measured(self, offset_s: float) -> bool:
        """Take a new measurement. True if it is the first, or moved by `LOG_STEP_S` or more since the last
        one this returned True for: the caller logs it then, and not on every poll."""
        self.offset_s = offset_s
        if self._noted_s is not None and abs(offset_s - self._noted_s) < self.LOG_STEP_S:
            return False
        self._noted_s = offset_s
        return True
