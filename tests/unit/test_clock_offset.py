"""`services.clock`: the offset of a peer's clock measured from one request, and a clock corrected by the
best of the last few measurements (the sample with the smallest network round trip), followed across a
step of either clock; an answer whose stamps cannot be true is refused."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from protocol.messages import CLOUD_ANSWERED_AT_HEADER, CLOUD_RECEIVED_AT_HEADER
from services.clock import ImpossibleStampsError, OffsetClock, OffsetSample, cloud_sample
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


def test_a_round_trip_shorter_than_the_peers_wait_by_a_rate_difference_counts_as_zero() -> None:
    # The peer's clock ran a little fast while it waited 25 s: its wait reads 10 ms longer than our whole
    # exchange, within 1 ms + 500 ppm of 25 s (13.5 ms).
    measured = OffsetSample.measure(sent=at(0), received=at(25), peer_received=at(5), peer_answered=at(30.01))
    assert measured.round_trip_s == 0.0


@pytest.mark.parametrize(
    ("received_s", "peer_wait_s"),
    [
        (0.05, 20.0),  # held 20 s by the peer's stamps, back in 50 ms by ours (a replayed long poll)
        (25.0, 25.02),  # 20 ms over a 25 s wait: past 1 ms + 500 ppm of it (13.5 ms)
        (0.0, 0.0011),  # no wait of ours at all, 1.1 ms of the peer's: past the 1 ms resolution
    ],
)
def test_a_peer_wait_longer_than_the_round_trip_is_refused(received_s: float, peer_wait_s: float) -> None:
    with pytest.raises(ImpossibleStampsError, match=r"`peer_answered` - `peer_received` must not exceed"):
        OffsetSample.measure(
            sent=at(0), received=at(received_s), peer_received=at(-120), peer_answered=at(-120 + peer_wait_s)
        )


def stamps(received: datetime, answered: datetime) -> dict[str, str]:
    return {CLOUD_RECEIVED_AT_HEADER: received.isoformat(), CLOUD_ANSWERED_AT_HEADER: answered.isoformat()}


def test_an_answer_with_impossible_stamps_gives_no_sample_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first answer is exact; the second says the cloud held it 20 s, 120 s ago, while ours took 50 ms.
    clock = OffsetClock(FakeClock())
    clock.measured(OffsetSample(offset_s=0.0, round_trip_s=0.05))
    with caplog.at_level(logging.WARNING, logger="services.clock"):
        taken = cloud_sample(stamps(at(-130), at(-110)), sent=at(0), received=at(0.05))
    assert taken is None
    assert [(r.message, r.code) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("clock sample refused: the cloud's time stamps cannot be true of its answer", "clock_sample_refused")
    ]
    assert "got 20 s" in caplog.records[0].data["why"]  # type: ignore[attr-defined]
    assert clock.offset_s == 0.0 and clock.error_s == pytest.approx(0.025)


def test_an_answer_with_possible_stamps_gives_its_sample() -> None:
    # The cloud, 3 s ahead, held the poll 10 s; ours took 10.2 s: offset 3, round trip 0.2.
    taken = cloud_sample(stamps(at(3.1), at(13.1)), sent=at(0), received=at(10.2))
    assert taken is not None
    assert (taken.offset_s, taken.round_trip_s) == (pytest.approx(3.0), pytest.approx(0.2))
    assert cloud_sample({}, sent=at(0), received=at(1)) is None  # a cloud that does not stamp


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
    # Each within the others' error bounds (half their round trips): all can be right.
    clock = OffsetClock(FakeClock(), window=8)
    for offset_s, round_trip_s in ((2.15, 0.4), (2.0, 0.1), (2.1, 0.3), (1.7, 0.8)):
        clock.measured(sample(offset_s, round_trip_s))
    assert clock.offset_s == 2.0


def test_a_step_of_the_clock_is_followed_at_the_next_sample() -> None:
    # Fine samples at offset 0, then the local clock is stepped back 30 s (the host's NTP corrected it) and
    # every sample reads 30 s, each with a longer round trip than the old ones: 30 - 0 is past both error
    # bounds (0.025 + 0.05), so the first of them is taken and the older ones are dropped.
    clock = OffsetClock(FakeClock(), window=8)
    for _ in range(3):
        clock.measured(sample(0.0, 0.05))
    assert clock.measured(sample(30.0, 0.1))  # moved by more than a second: worth a log line
    assert (clock.offset_s, clock.error_s) == (30.0, pytest.approx(0.05))
    assert not clock.measured(sample(30.02, 0.08))  # after the step, the filter works as before
    assert clock.offset_s == 30.02
    clock.measured(sample(29.99, 0.3))
    assert clock.offset_s == 30.02


def test_a_coarse_sample_past_the_bound_of_the_fine_one_in_use_is_a_step() -> None:
    # Good only to 20 s, but 100 s away from a fine offset: the clock stepped, and the coarse sample is
    # nearer the truth than the fine one was.
    clock = OffsetClock(FakeClock(), window=8, max_error_s=1.0)
    clock.measured(sample(0.0, 0.1))
    clock.measured(sample(-100.0, 40.0))
    assert (clock.offset_s, clock.error_s) == (-100.0, 20.0)


def test_a_one_off_sample_past_the_bound_is_followed_for_one_sample_only() -> None:
    # A spike (only a forged answer can make one: an honest offset is within its bound): taken, as a step
    # would be, and undone by the next honest sample, which cannot agree with it either.
    clock = OffsetClock(FakeClock(), window=8)
    clock.measured(sample(0.0, 0.05))
    clock.measured(sample(7.0, 0.1))
    assert clock.offset_s == 7.0
    clock.measured(sample(0.01, 0.1))
    assert (clock.offset_s, clock.error_s) == (0.01, pytest.approx(0.05))


def test_samples_within_each_others_bounds_are_not_a_step() -> None:
    # 0.07 apart with bounds 0.025 + 0.05 (and 1 ms): both can be right, so the faster one stays in use.
    clock = OffsetClock(FakeClock(), window=8)
    clock.measured(sample(0.0, 0.05))
    clock.measured(sample(0.07, 0.1))
    assert clock.offset_s == 0.0
    clock.measured(sample(0.077, 0.1))  # 0.077 > 0.076: past them
    assert clock.offset_s == 0.077


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
        clock.measured(sample(172825.0, 50.0))  # good to 25 s: within it of the one in use
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
