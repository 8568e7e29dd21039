"""`services.clock`: the offset of a peer's clock measured from one request, and a clock corrected by the
best of the last few measurements (the sample with the smallest network round trip)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.clock import OffsetClock, OffsetSample
from tests.clock import T0, FakeClock


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample(offset_s: float, round_trip_s: float) -> OffsetSample:
    return OffsetSample(offset_s=offset_s, round_trip_s=round_trip_s)


def test_the_offset_and_round_trip_leave_a_long_polls_wait_out() -> None:
    # The peer's clock is 10 s ahead; the request takes 0.1 s each way and the peer waits 25 s before it
    # answers. Ours: sent at T0, received at T0 + 25.2. The peer's: received at T0 + 10.1, answered at
    # T0 + 35.1. Offset = ((10.1 - 0) + (35.1 - 25.2)) / 2 = 10; round trip = 25.2 - (35.1 - 10.1) = 0.2.
    measured = OffsetSample.measure(
        sent=at(0), received=at(25.2), peer_received=at(10.1), peer_answered=at(35.1)
    )
    assert abs(measured.offset_s - 10.0) < 1e-9
    assert abs(measured.round_trip_s - 0.2) < 1e-9
    assert abs(measured.error_s - 0.1) < 1e-9


def test_an_uneven_trip_errs_by_half_the_difference() -> None:
    # Peer 3 s behind; out 0.4 s, back 0.2 s, no wait: ((-3 + 0.4) + (-3 - 0.2)) / 2 = -2.9, off by 0.1,
    # within the error bound of half the 0.6 s round trip.
    measured = OffsetSample.measure(
        sent=at(0), received=at(0.6), peer_received=at(-2.6), peer_answered=at(-2.6)
    )
    assert abs(measured.offset_s - (-2.9)) < 1e-9
    assert abs(measured.round_trip_s - 0.6) < 1e-9


def test_a_round_trip_shorter_than_the_peers_wait_counts_as_zero() -> None:
    # The peer's clock ran a little fast while it waited: its wait (1.002 s) reads longer than ours (1 s).
    measured = OffsetSample.measure(sent=at(0), received=at(1), peer_received=at(5), peer_answered=at(6.002))
    assert measured.round_trip_s == 0.0


def test_an_offset_clock_reads_the_peers_time_once_measured() -> None:
    local = FakeClock()
    clock = OffsetClock(local)
    assert clock() == T0 and clock.offset_s is None and clock.error_s is None  # nothing measured: its own
    assert clock.measured(sample(-4.5, 0.2))  # the first: worth a log line
    local.advance(60)
    assert clock() == T0 + timedelta(seconds=55.5)
    assert clock.error_s == pytest.approx(0.1)


def test_one_slow_answer_does_not_move_the_offset() -> None:
    # An exact exchange, then one whose answer took 40 s to come back: on the wire that one reads -20 s.
    clock = OffsetClock(FakeClock())
    clock.measured(sample(0.0, 0.0))
    assert not clock.measured(sample(-20.0, 40.0))
    assert clock.offset_s == 0.0


def test_the_sample_with_the_smallest_round_trip_in_the_window_wins() -> None:
    clock = OffsetClock(FakeClock(), window=8)
    for offset_s, round_trip_s in ((3.0, 0.4), (2.0, 0.1), (2.6, 0.3), (1.5, 0.8)):
        clock.measured(sample(offset_s, round_trip_s))
    assert clock.offset_s == 2.0


def test_a_step_of_the_clock_is_followed_once_the_older_samples_leave_the_window() -> None:
    # A fine sample at offset 0, then the local clock is stepped (the host's NTP corrected it) and every
    # sample reads 5 s, each with a longer round trip than the old one: the old one wins while it is among
    # the last 8, then the new offset is used.
    clock = OffsetClock(FakeClock(), window=8)
    clock.measured(sample(0.0, 0.05))
    for _ in range(7):
        clock.measured(sample(5.0, 0.2))
    assert clock.offset_s == 0.0
    assert clock.measured(sample(5.0, 0.2))  # the 8th after the step: the old sample is out; worth a log
    assert clock.offset_s == 5.0


def test_slow_answers_do_not_replace_a_fine_offset_even_after_it_leaves_the_window() -> None:
    # A fine sample, then a congested link for longer than the window: every sample is good only to 20 s,
    # past `max_error_s` (1 s), so the fine offset stays in use.
    clock = OffsetClock(FakeClock(), window=8, max_error_s=1.0)
    clock.measured(sample(0.0, 0.1))
    for _ in range(20):
        clock.measured(sample(-20.0, 40.0))
    assert clock.offset_s == 0.0
    assert clock.error_s == pytest.approx(0.05)
    clock.measured(sample(0.3, 1.0))  # fine again (good to 0.5 s): taken
    assert clock.offset_s == 0.3


def test_a_coarse_first_sample_is_taken_and_replaced_by_a_finer_one() -> None:
    # A clock two days off is better corrected roughly than not at all: the first sample is taken however
    # slow its answer; a less coarse one replaces it, a coarser one does not.
    clock = OffsetClock(FakeClock(), window=8, max_error_s=1.0)
    assert clock.measured(sample(172800.0, 6.0))
    assert clock.offset_s == 172800.0
    clock.measured(sample(172802.0, 4.0))
    assert clock.offset_s == 172802.0
    for _ in range(10):
        clock.measured(sample(172830.0, 50.0))
    assert clock.offset_s == 172802.0


def test_an_offset_clock_says_which_measurements_are_worth_a_log_line() -> None:
    # A window of one: every fine sample is taken as it comes.
    clock = OffsetClock(FakeClock(), window=1)
    noted = [clock.measured(sample(offset, 0.1)) for offset in (2.0, 2.4, 2.9, 3.1, 3.0, 1.9)]
    # 2.0 first; 2.4 and 2.9 within 1 s of it; 3.1 is 1.1 away; 3.0 within 1 s of 3.1; 1.9 is 1.2 away.
    assert noted == [True, False, False, True, False, True]
    assert clock.offset_s == 1.9  # every fine measurement is taken, noted or not


@pytest.mark.parametrize(
    ("field", "value"), [("window", 0), ("max_error_s", 0.0), ("max_error_s", float("nan"))]
)
def test_an_offset_clock_refuses_a_filter_that_keeps_nothing(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"`{field}` must .* got {value}"):
        OffsetClock(FakeClock(), **{field: value})  # type: ignore[arg-type]
