"""`services.clock`: the offset of a peer's clock measured from one request, and a clock corrected by it."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.clock import OffsetClock, clock_offset_s
from tests.clock import T0, FakeClock


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_offset_leaves_a_long_polls_wait_out() -> None:
    # The peer's clock is 10 s ahead; the request takes 0.1 s each way and the peer waits 25 s before it
    # answers. Ours: sent at T0, received at T0 + 25.2. The peer's: received at T0 + 10.1, answered at
    # T0 + 35.1. Offset = ((10.1 - 0) + (35.1 - 25.2)) / 2 = 10.
    offset = clock_offset_s(sent=at(0), received=at(25.2), peer_received=at(10.1), peer_answered=at(35.1))
    assert abs(offset - 10.0) < 1e-9


def test_an_uneven_trip_errs_by_half_the_difference() -> None:
    # Peer 3 s behind; out 0.4 s, back 0.2 s, no wait: ((-3 + 0.4) + (-3 - 0.2)) / 2 = -2.9, off by 0.1.
    offset = clock_offset_s(sent=at(0), received=at(0.6), peer_received=at(-2.6), peer_answered=at(-2.6))
    assert abs(offset - (-2.9)) < 1e-9


def test_an_offset_clock_reads_the_peers_time_once_measured() -> None:
    local = FakeClock()
    clock = OffsetClock(local)
    assert clock() == T0 and clock.offset_s is None  # nothing measured: its own time
    assert clock.measured(-4.5)  # the first: worth a log line
    local.advance(60)
    assert clock() == T0 + timedelta(seconds=55.5)


def test_an_offset_clock_says_which_measurements_are_worth_a_log_line() -> None:
    clock = OffsetClock(FakeClock())
    noted = [clock.measured(offset) for offset in (2.0, 2.4, 2.9, 3.1, 3.0, 1.9)]
    # 2.0 first; 2.4 and 2.9 within 1 s of it; 3.1 is 1.1 away; 3.0 within 1 s of 3.1; 1.9 is 1.2 away.
    assert noted == [True, False, False, True, False, True]
    assert clock.offset_s == 1.9  # every measurement is taken, noted or not
