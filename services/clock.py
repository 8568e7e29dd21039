"""Time as the services see it: injected, so deadlines can be tested without waiting.

Two kinds of clock. A `Clock` is a process's own (`utc_now`, or a test's). A `TimeSource` is the one time
that deadlines are opened and checked on: the cloud's replicas read it from their shared store
(`store_time`, Redis `TIME`), so a replica whose own clock is off neither opens a round late nor closes
one early. An edge has no access to that store: it reads its own clock corrected by the offset it
measures to the cloud's time whenever it polls for a plan, filtered for slow answers (`OffsetClock`,
`OffsetSample`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OffsetSample:
    """One request's measurement of a peer's clock: how far it is ahead of ours (`offset_s`), and the
    network's round trip (`round_trip_s`: our send-to-receive time less the peer's own wait), twice the most
    the offset can be off by."""

    offset_s: float
    round_trip_s: float

    @property
    def error_s(self) -> float:
        """The most `offset_s` can be off by: half the round trip, if all of it was one way."""
        return self.round_trip_s / 2

    @classmethod
    def measure(
        cls, *, sent: datetime, received: datetime, peer_received: datetime, peer_answered: datetime
    ) -> OffsetSample:
        """The sample of one request: ours stamped `sent` and `received`, the peer's `peer_received` and
        `peer_answered` (NTP's on-wire offset and round-trip delay, RFC 5905 section 8).

        With a peer that answers at once the offset is the peer's time less the midpoint of `sent` and
        `received`; the peer's two stamps keep a long-poll's wait out of both. The offset is exact when the
        two directions take equal time. The round trip is floored at zero: clocks that tick at slightly
        different rates can make it come out a little negative."""
        offset = ((peer_received - sent) + (peer_answered - received)).total_seconds() / 2
        round_trip = ((received - sent) - (peer_answered - peer_received)).total_seconds()
        return cls(offset_s=offset, round_trip_s=max(0.0, round_trip))


def cloud_sample(headers: Mapping[str, str], *, sent: datetime, received: datetime) -> OffsetSample | None:
    """The sample of the cloud's time to ours from its answer to a plan poll we `sent` and `received`
    (`OffsetSample.measure` with the answer's two time stamps); None from a cloud that does not stamp its
    answers."""
    try:
        peer_received = datetime.fromisoformat(headers[CLOUD_RECEIVED_AT_HEADER])
        peer_answered = datetime.fromisoformat(headers[CLOUD_ANSWERED_AT_HEADER])
    except (KeyError, ValueError):
        return None
    return OffsetSample.measure(
        sent=sent, received=received, peer_received=peer_received, peer_answered=peer_answered
    )


class OffsetClock:
    """A process's clock corrected by its offset to another's (an edge's or a hospital's to the cloud's):
    calling it reads the other clock's time as well as this process can tell. Until a first measurement the
    offset is zero and `offset_s` None.

    One slow answer must not move that time: a sample's offset can be off by half its round trip, all of
    which may have been spent one way. So the clock keeps the last `window` samples and uses the offset of
    the one with the smallest round trip (NTP's clock filter, RFC 5905 section 10; Mills, "Internet time
    synchronization: the Network Time Protocol", 1991). A sample good to no better than `max_error_s` (half
    its round trip) replaces the offset in use only when that came from a sample no better: a first
    measurement is taken however coarse (a clock days off needs it), but once a fine one is in use a run of
    slow answers keeps it, even after it has left the window, until a fine sample comes again."""

    #: A measurement that moved by this much since the last one worth a log line is worth one again.
    LOG_STEP_S = 1.0

    def __init__(self, local: Clock = utc_now, *, window: int = 8, max_error_s: float = 1.0) -> None:
        if window < 1:
            raise ValueError(f"`window` must be at least 1, got {window}")
        if not max_error_s > 0:
            raise ValueError(f"`max_error_s` must be positive, got {max_error_s}")
        self.local = local
        self.max_error_s = max_error_s
        self._samples: deque[OffsetSample] = deque(maxlen=window)
        self._in_use: OffsetSample | None = None
        self._noted_s: float | None = None

    @property
    def offset_s(self) -> float | None:
        """The offset in use (the other clock's time less ours, in seconds); None until a first sample."""
        return self._in_use.offset_s if self._in_use is not None else None

    @property
    def error_s(self) -> float | None:
        """The most the offset in use can be off by (half its sample's round trip); None until a first."""
        return self._in_use.error_s if self._in_use is not None else None

    def __call__(self) -> datetime:
        return self.local() + timedelta(seconds=self.offset_s or 0.0)

    def measured(self, sample: OffsetSample) -> bool:
        """Take a new sample. True if the offset in use is the first, or moved by `LOG_STEP_S` or more since
        the last one this returned True for: the caller logs it then, and not on every poll."""
        self._samples.append(sample)
        best = min(self._samples, key=lambda s: s.round_trip_s)
        in_use = self._in_use
        if in_use is None or best.error_s <= max(self.max_error_s, in_use.error_s):
            in_use = self._in_use = best
        offset = in_use.offset_s
        if self._noted_s is not None and abs(offset - self._noted_s) < self.LOG_STEP_S:
            return False
        self._noted_s = offset
        return True
