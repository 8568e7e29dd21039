"""Where a hospital is in each round when it moves between edges (`ClientInfo.at_round`, and the record a
re-enrolment leaves, `cloud_server.enrolment.placed`, with the edges it had before back to the oldest round
a sum may be for), with the expected records written by hand."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cloud_server.enrolment import placed
from protocol.messages import ClientInfo, EdgeStint
from services.identity import SigningKey

AT = datetime(2026, 3, 1, tzinfo=UTC)
AT_EDGE_1 = ClientInfo(
    client_id="hosp-a",
    edge_id="edge-1",
    public_key=SigningKey.generate().public_bytes,
    num_examples=100,
    rank=2,
    enrolled_at=AT,
)


def asked(edge_id: str) -> ClientInfo:
    """A re-enrolment's record of hosp-a at `edge_id`, made later than the first."""
    return AT_EDGE_1.model_copy(update={"edge_id": edge_id, "enrolled_at": datetime(2026, 3, 2, tzinfo=UTC)})


def test_a_move_waits_for_the_open_round_and_is_done_after_it() -> None:
    moving = placed(AT_EDGE_1, asked("edge-2"), round_=4, planned=True, open_=True, since=3)

    assert (moving.edge_id, moving.moving_to, moving.moving_after_round) == ("edge-1", "edge-2", 4)
    assert moving.enrolled_at == AT  # the first enrolment's time is kept
    assert [moving.at_round(n).edge_id for n in (3, 4, 5, 9)] == ["edge-1", "edge-1", "edge-2", "edge-2"]
    assert moving.at_round(5).moving_to is None and moving.at_round(5).moving_after_round is None
    assert moving.at_round(5).edges_before == [EdgeStint(edge_id="edge-1", through_round=4)]


def test_a_move_with_no_round_open_for_the_hospital_is_done_at_once() -> None:
    before_start = placed(AT_EDGE_1, asked("edge-2"), round_=None, planned=False, open_=False, since=0)
    unplanned = placed(AT_EDGE_1, asked("edge-2"), round_=4, planned=False, open_=True, since=2)
    after_its_round = placed(AT_EDGE_1, asked("edge-2"), round_=4, planned=True, open_=False, since=2)

    for moved in (before_start, unplanned, after_its_round):
        assert (moved.edge_id, moved.moving_to, moved.moving_after_round) == ("edge-2", None, None)
    assert before_start.edges_before == []
    # Not in round 4's plan: edge-1 may still send a late sum of round 3 with it, not of round 4.
    assert unplanned.edges_before == [EdgeStint(edge_id="edge-1", through_round=3)]
    assert [unplanned.at_round(n).edge_id for n in (3, 4)] == ["edge-1", "edge-2"]
    # In round 4's plan, and round 4 is over: edge-1 may still send round 4's late bucket with it.
    assert after_its_round.edges_before == [EdgeStint(edge_id="edge-1", through_round=4)]
    assert [after_its_round.at_round(n).edge_id for n in (4, 5)] == ["edge-1", "edge-2"]


def test_naming_the_current_edge_cancels_a_move_and_a_done_move_is_the_base_of_the_next() -> None:
    moving = placed(AT_EDGE_1, asked("edge-2"), round_=4, planned=True, open_=True, since=3)

    cancelled = placed(moving, asked("edge-1"), round_=4, planned=True, open_=True, since=3)
    # Round 4 is over: edge-2's now, and edge-1's in round 4.
    again = placed(moving, asked("edge-3"), round_=6, planned=True, open_=True, since=4)

    assert (cancelled.edge_id, cancelled.moving_to, cancelled.edges_before) == ("edge-1", None, [])
    assert (again.edge_id, again.moving_to, again.moving_after_round) == ("edge-2", "edge-3", 6)
    assert [again.at_round(n).edge_id for n in (4, 5, 6, 7)] == ["edge-1", "edge-2", "edge-2", "edge-3"]


def test_a_re_enrolment_at_the_current_edge_keeps_the_edges_before() -> None:
    moving = placed(AT_EDGE_1, asked("edge-2"), round_=4, planned=True, open_=True, since=3)

    restarted = placed(moving, asked("edge-2"), round_=5, planned=True, open_=True, since=4)

    assert (restarted.edge_id, restarted.moving_to) == ("edge-2", None)
    assert restarted.edges_before == [EdgeStint(edge_id="edge-1", through_round=4)]
    assert [restarted.at_round(n).edge_id for n in (4, 5)] == ["edge-1", "edge-2"]


def test_the_edges_before_go_back_to_the_oldest_round_a_sum_may_be_for() -> None:
    # Moving every round, each while planned in the open round, with late buckets up to 2 rounds old:
    # edge-1 in round 0, edge-2 in 1, edge-3 in 2, edge-1 in 3, edge-2 in 4, then edge-3.
    record = AT_EDGE_1
    for round_, edge_id in enumerate(("edge-2", "edge-3", "edge-1", "edge-2", "edge-3")):
        record = placed(record, asked(edge_id), round_=round_, planned=True, open_=True, since=round_ - 2)

    assert (record.edge_id, record.moving_to, record.moving_after_round) == ("edge-2", "edge-3", 4)
    # Round 4 is open: a sum may be for round 2 at the oldest; rounds 0 and 1 are forgotten.
    assert record.edges_before == [
        EdgeStint(edge_id="edge-3", through_round=2),
        EdgeStint(edge_id="edge-1", through_round=3),
    ]
    assert [record.at_round(n).edge_id for n in (2, 3, 4, 5)] == ["edge-3", "edge-1", "edge-2", "edge-3"]


def test_a_move_names_its_round() -> None:
    with pytest.raises(ValidationError, match="moving_after_round"):
        ClientInfo.model_validate(AT_EDGE_1.model_dump() | {"moving_to": "edge-2"})


def test_the_edges_before_end_in_rounds_in_order() -> None:
    stints = [{"edge_id": "edge-2", "through_round": 5}, {"edge_id": "edge-3", "through_round": 5}]
    with pytest.raises(ValidationError, match="edges_before"):
        ClientInfo.model_validate(AT_EDGE_1.model_dump() | {"edges_before": stints})
    with pytest.raises(ValidationError, match="edges_before"):
        ClientInfo.model_validate(
            AT_EDGE_1.model_dump()
            | {"edges_before": stints[:1], "moving_to": "edge-3", "moving_after_round": 4}
        )
