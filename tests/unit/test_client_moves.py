"""Where a hospital is in each round when it moves between edges (`ClientInfo.at_round`, and the record a
re-enrolment leaves, `cloud_server.enrolment.placed`), with the expected records written by hand."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cloud_server.enrolment import placed
from protocol.messages import ClientInfo

AT = datetime(2026, 3, 1, tzinfo=UTC)
AT_EDGE_1 = ClientInfo(
    client_id="hosp-a", edge_id="edge-1", public_key=b"k" * 32, num_examples=100, rank=2, enrolled_at=AT
)


def asked(edge_id: str) -> ClientInfo:
    """A re-enrolment's record of hosp-a at `edge_id`, made later than the first."""
    return AT_EDGE_1.model_copy(update={"edge_id": edge_id, "enrolled_at": datetime(2026, 3, 2, tzinfo=UTC)})


def test_a_move_waits_for_the_open_round_and_is_done_after_it() -> None:
    moving = placed(AT_EDGE_1, asked("edge-2"), round_=4, open_for_it=True)

    assert (moving.edge_id, moving.moving_to, moving.moving_after_round) == ("edge-1", "edge-2", 4)
    assert moving.enrolled_at == AT  # the first enrolment's time is kept
    assert [moving.at_round(n).edge_id for n in (3, 4, 5, 9)] == ["edge-1", "edge-1", "edge-2", "edge-2"]
    assert moving.at_round(5).moving_to is None and moving.at_round(5).moving_after_round is None


def test_a_move_with_no_round_open_for_the_hospital_is_done_at_once() -> None:
    for round_ in (None, 4):
        moved = placed(AT_EDGE_1, asked("edge-2"), round_=round_, open_for_it=False)
        assert (moved.edge_id, moved.moving_to, moved.moving_after_round) == ("edge-2", None, None)


def test_naming_the_current_edge_cancels_a_move_and_a_done_move_is_the_base_of_the_next() -> None:
    moving = placed(AT_EDGE_1, asked("edge-2"), round_=4, open_for_it=True)

    cancelled = placed(moving, asked("edge-1"), round_=4, open_for_it=True)
    again = placed(moving, asked("edge-3"), round_=6, open_for_it=True)  # round 4 is over: edge-2's now

    assert (cancelled.edge_id, cancelled.moving_to) == ("edge-1", None)
    assert (again.edge_id, again.moving_to, again.moving_after_round) == ("edge-2", "edge-3", 6)


def test_a_move_names_its_round() -> None:
    with pytest.raises(ValidationError, match="moving_after_round"):
        ClientInfo.model_validate(AT_EDGE_1.model_dump() | {"moving_to": "edge-2"})
