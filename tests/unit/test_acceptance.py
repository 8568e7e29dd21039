"""The cloud's pure acceptance checks (protocol/acceptance.py), with the expected claims written by hand."""

import pytest

from protocol.acceptance import (
    CountedElsewhereError,
    CountedTwiceError,
    CountMismatchError,
    ReplayedCiphertextError,
    Sum,
    check_count,
    check_not_counted,
    claim,
)

OWN = Sum("ciphertext", "contributions", 3, "aa" * 32, ("a", "b"), ("0a" * 32, "0b" * 32))
LATE = Sum("late.0.ciphertext", "late.0.contributions", 2, "bb" * 32, ("c", "d"), ("0c" * 32, "0d" * 32))


def test_the_envelope_count_must_be_the_manifests() -> None:
    check_count(2, named=2, field="ciphertext")
    for envelope_count in (1, 3, 65):
        with pytest.raises(CountMismatchError) as caught:
            check_count(envelope_count, named=2, field="late.1.ciphertext")
        assert caught.value.field == "late.1.ciphertext"
        assert caught.value.detail == {"envelope_count": envelope_count, "manifest_count": 2}


def test_claims_name_every_digest_and_add_the_hospitals_to_their_rounds() -> None:
    claims = claim([OWN, LATE], edge_id="e2", accepted={"cc" * 32: True}, counted={2: {"x": "e1"}})

    assert claims.digests == {
        "aa" * 32: "ciphertext",
        "0a" * 32: "contributions.0",
        "0b" * 32: "contributions.1",
        "bb" * 32: "late.0.ciphertext",
        "0c" * 32: "late.0.contributions.0",
        "0d" * 32: "late.0.contributions.1",
    }
    assert claims.counted == {3: {"a": "e2", "b": "e2"}, 2: {"x": "e1", "c": "e2", "d": "e2"}}


def test_a_digest_accepted_before_or_twice_in_one_aggregate_is_a_replay() -> None:
    with pytest.raises(ReplayedCiphertextError) as before:
        claim([OWN, LATE], edge_id="e1", accepted={"bb" * 32: True}, counted={})
    same = Sum(
        "late.0.ciphertext", "late.0.contributions", 2, OWN.ciphertext_sha256, ("c", "d"), LATE.upload_sha256
    )
    with pytest.raises(ReplayedCiphertextError) as inside:
        claim([OWN, same], edge_id="e1", accepted={}, counted={})

    assert before.value.field == inside.value.field == "late.0.ciphertext"


def test_a_hospital_counted_for_the_round_at_another_edge_is_refused_by_name() -> None:
    with pytest.raises(CountedElsewhereError) as caught:
        claim([OWN], edge_id="e2", accepted={}, counted={3: {"b": "e1", "z": "e1"}})

    assert caught.value.field == "contributions"
    assert caught.value.detail == {"round": 3, "client_ids": ["b"], "counted_at": {"b": "e1"}}


def test_a_hospital_this_edge_counted_for_the_round_is_counted_twice_not_elsewhere() -> None:
    """`client_counted_elsewhere` tells an edge another edge holds the hospital; where this edge counted
    one of them itself (a late bucket naming a hospital of its own sum), the refusal is `CountedTwiceError`."""
    with pytest.raises(CountedTwiceError) as mixed:
        check_not_counted(
            ("a", "b"),
            origin_round=2,
            edge_id="e2",
            counted={"a": "e2", "b": "e1"},
            field="late.0.contributions",
        )
    check_not_counted(("a", "b"), origin_round=2, edge_id="e2", counted={"c": "e1"}, field="contributions")

    assert not isinstance(mixed.value, CountedElsewhereError)
    assert mixed.value.detail == {"round": 2, "client_ids": ["a", "b"], "counted_at": {"a": "e2", "b": "e1"}}


def test_an_upload_already_in_an_accepted_sum_is_a_replay_naming_its_hospital() -> None:
    """A hospital's upload digest (from its signed manifest line) is claimed with the sum: another sum that
    carries the same upload, in this aggregate or a later one, is refused and names the hospital."""
    with pytest.raises(ReplayedCiphertextError) as before:
        claim([OWN, LATE], edge_id="e1", accepted={"0d" * 32: True}, counted={})
    again = Sum("late.0.ciphertext", "late.0.contributions", 2, "bb" * 32, ("c", "d"), ("0c" * 32, "0a" * 32))
    with pytest.raises(ReplayedCiphertextError) as inside:
        claim([OWN, again], edge_id="e1", accepted={}, counted={})

    assert before.value.field == "late.0.contributions.1.ciphertext_sha256"
    assert before.value.detail == {"ciphertext_sha256": "0d" * 32, "client_ids": ["d"], "round": 2}
    assert inside.value.detail == {"ciphertext_sha256": "0a" * 32, "client_ids": ["d"], "round": 2}


def test_a_sum_of_one_upload_is_that_upload() -> None:
    """With k = 1 a sum can be one hospital's upload: the same digest twice in one part is one ciphertext."""
    single = Sum("ciphertext", "contributions", 0, "aa" * 32, ("a",), ("aa" * 32,))

    assert claim([single], edge_id="e1", accepted={}, counted={}).digests == {"aa" * 32: "ciphertext"}
