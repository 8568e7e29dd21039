"""The fifth synthetic note set is well formed: spans cover their text, do not overlap, use the scorer's
types, every type is planted often enough to give a recall, and the seed reproduces the set."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter

import pytest

from tests.deid_fifth_draws import Draws, unmark
from tests.deid_notes_fifth import FIFTH_COUNT, FIFTH_SEED, GENRES, FifthNote, fifth_notes
from tests.deid_sets import SETS, TYPES


@pytest.fixture(scope="module")
def notes() -> list[FifthNote]:
    return fifth_notes()


def test_the_set_is_large_and_spans_many_genres(notes: list[FifthNote]) -> None:
    assert len(notes) == FIFTH_COUNT >= 250
    assert {n.genre for n in notes} == set(GENRES)
    assert len(GENRES) >= 17


def test_spans_cover_an_identifier_without_surrounding_space(notes: list[FifthNote]) -> None:
    for note in notes:
        for span in note.spans:
            value = note.text[span.start : span.end]
            assert 0 <= span.start < span.end <= len(note.text), (note.genre, span)
            assert value == value.strip(), (note.genre, value)
            assert any(ch.isalnum() for ch in value), (note.genre, value)
            assert not re.search("[\x00-\x08\x0b-\x1f]", note.text), note.genre


def test_spans_do_not_overlap(notes: list[FifthNote]) -> None:
    for note in notes:
        ordered = sorted(note.spans, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            assert before.end <= after.start, (note.genre, before, after)


def test_every_type_is_the_scorers_and_planted_at_least_ten_times(notes: list[FifthNote]) -> None:
    counts = Counter(span.kind for note in notes for span in note.spans)
    assert set(counts) == set(TYPES)
    assert min(counts.values()) >= 10, counts


def test_the_seed_reproduces_the_set_and_another_seed_changes_it(notes: list[FifthNote]) -> None:
    assert fifth_notes(FIFTH_SEED) == notes
    other = fifth_notes(FIFTH_SEED + 1)
    assert [n.text for n in other] != [n.text for n in notes]


def test_the_scorer_takes_the_set_under_its_name(notes: list[FifthNote]) -> None:
    build, seed = SETS["fifth"]
    labelled = build(20, seed)
    assert [n.text for n in labelled] == [n.text for n in notes[:20]]
    assert [n.planted for n in labelled] == [
        tuple((s.start, s.end, s.kind) for s in n.spans) for n in notes[:20]
    ]


def test_unmark_finds_spans_worked_out_by_hand() -> None:
    raw = "Seen by \x01NAME\x02Aroha Ngata\x03 on \x01DATE\x02May 4\x03."
    text, spans = unmark(raw)
    assert text == "Seen by Aroha Ngata on May 4."
    assert [(s.start, s.end, s.kind) for s in spans] == [(8, 19, "NAME"), (23, 28, "DATE")]


def test_unmark_refuses_a_marker_left_half_open() -> None:
    with pytest.raises(ValueError, match="marker"):
        unmark("Seen by \x01NAME\x02aroha ngata")


def test_age_words_over_ninety_are_spelled_out() -> None:
    draws = Draws(random.Random(3))
    ages = {unmark(draws.old_age())[0] for _ in range(400)}
    assert any("ninety-" in a for a in ages)
    assert any("one hundred" in a for a in ages)
