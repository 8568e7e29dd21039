"""Time as the services see it: injected, so deadlines can be tested without waiting.

Two kinds of clock. A `Clock` is a process's own (`utc_now`, or a test's). A `TimeSource` is the one time
that deadlines are opened and checked on: the cloud's replicas read it from their shared store
(`store_time`, Redis `TIME`), so a replica whose own clock is off neither opens a round late nor closes
one early. An edge has no access to that store: it reads its own clock corrected by the offset it
measures to the cloud's time whenever it polls for a plan, filtered for slow answers and followed across a
step of either clock (`OffsetClock`, `OffsetSample`); an answer whose stamps cannot be true is refused
(`ImpossibleStampsError`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from protocol.messages import CLOUD_ANSWERED_AT_HEADER, CLOUD_RECEIVED_AT_HEADER

if TYPE_CHECKING:
    from services.store import StateStore

log = logging.getLogger("services.clock")

Clock = Callable[[], datetime]
TimeSource = Callable[[], Awaitable[datetime]]

#: How far two readings of the same moment may disagree for reasons other than a wrong clock: the stamps'
#: microsecond resolution and the jitter of reading a clock.
STAMP_TOLERANCE_S = 0.001
#: The most two clocks' rates may differ by, as a fraction: NTP's bound on the frequency error it corrects
#: (MAXFREQ, 500 ppm, RFC 5905 appendix A). Over a long poll's wait the peer's clock and ours may count
#: that much apart.
MAX_RATE_ERROR = 500e-6


class ImpossibleStampsError(ValueError):
    """A request's time stamps that cannot all be true: the peer says it held the request longer than it was
    away from us. Replayed (a cached answer's stamps) or forged; no offset can be read from it."""


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
        two directions take equal time.

        The peer's wait cannot outlast our send-to-receive time: raises `ImpossibleStampsError` if it does
        by more than the clocks' rates and resolution allow (`STAMP_TOLERANCE_S` plus `MAX_RATE_ERROR` of
        the wait). Floored at zero, such a sample would pass for an exact one and win the filter. Within that
        tolerance the round trip is floored at zero."""
        offset = ((peer_received - sent) + (peer_answered - received)).total_seconds() / 2
        ours_s = (received - sent).total_seconds()
        wait_s = (peer_answered - peer_received).total_seconds()
        round_trip = ours_s - wait_s
        if round_trip < -(STAMP_TOLERANCE_S + MAX_RATE_ERROR * abs(wait_s)):
            raise ImpossibleStampsError(
                f"`peer_answered` - `peer_received` must not exceed `received` - `sent` ({ours_s:g} s), "
                f"got {wait_s:g} s"
            )
        return cls(offset_s=offset, round_trip_s=max(0.0, round_trip))

    def agrees_with(self, other: OffsetSample) -> bool:
        """Whether both samples can be right: their offsets differ by no more than their error bounds
        together (and `STAMP_TOLERANCE_S`). Two that cannot were taken on either side of a step of one of
        the clocks."""
        return abs(self.offset_s - other.offset_s) <= self.error_s + other.error_s + STAMP_TOLERANCE_S


def cloud_sample(headers: Mapping[str, str], *, sent: datetime, received: datetime) -> OffsetSample | None:
    """The sample of the cloud's time to ours from its answer to a plan poll we `sent` and `received`
    (`OffsetSample.measure` with the answer's two time stamps); None from a cloud that does not stamp its
    answers, and from an answer whose stamps cannot be true (`ImpossibleStampsError`): logged here, once
    for each such answer, for the edge and the hospital alike."""
    try:
        peer_received = datetime.fromisoformat(headers[CLOUD_RECEIVED_AT_HEADER])
        peer_answered = datetime.fromisoformat(headers[CLOUD_ANSWERED_AT_HEADER])
    except (KeyError, ValueError):
        return None
    try:
        return OffsetSample.measure(
            sent=sent, received=received, peer_received=peer_received, peer_answered=peer_answered
        )
    except ImpossibleStampsError as e:
        log.warning(
            "clock sample refused: the cloud's time stamps cannot be true of its answer",
            extra={"code": "clock_sample_refused", "data": {"why": str(e)}},
        )
        return None


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
    slow answers keeps it, even after it has left the window, until a fine sample comes again.

    A step of either clock (an NTP daemon correcting it) must be followed at once, not once the samples
    from before it have left the window. A new sample that cannot agree with the one in use (their offsets
    differ by more than both error bounds, `OffsetSample.agrees_with`) says one clock stepped between them:
    the clock drops every older sample and uses the new one, however coarse. It does so at the first such
    sample, without NTP's wait for more (its popcorn spike suppressor and step-out, RFC 5905 sections 10
    and 11.3). NTP judges a sample by the statistical jitter of the ones before it, so a far one may be
    noise; an honest answer's offset is never off by more than its error bound, so a sample beyond it is a
    step, not a spike, and waiting would leave every deadline off by the step until the next poll. Only a
    forger on the path can send a single far sample, and one could as well send two: a one-off is followed
    for one poll and undone by the next honest answer."""

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
        in_use = self._in_use
        stepped = in_use is not None and not sample.agrees_with(in_use)
        if stepped:
            self._samples.clear()
        self._samples.append(sample)
        best = min(self._samples, key=lambda s: s.round_trip_s)
        if in_use is None or stepped or best.error_s <= max(self.max_error_s, in_use.error_s):
            in_use = self._in_use = best
        offset = in_use.offset_s
        if self._noted_s is not None and abs(offset - self._noted_s) < self.LOG_STEP_S:
            return False
        self._noted_s = offset
        return True
