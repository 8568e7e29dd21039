"""The unseen note set is well formed: every planted span covers its value, and every kind is present."""

from collections import Counter

from tests.deid_notes_unseen import KINDS, UNSEEN_NOTE_COUNT, unseen_notes


def test_every_span_covers_its_value_and_spans_do_not_overlap() -> None:
    notes = unseen_notes()
    assert len(notes) == UNSEEN_NOTE_COUNT >= 200
    for note in notes:
        previous_end = 0
        for span in note.spans:
            assert note.text[span.start : span.end] == span.text
            assert span.text.strip() == span.text and span.text
            assert span.start >= previous_end
            previous_end = span.end


def test_every_kind_and_genre_is_planted_many_times() -> None:
    notes = unseen_notes()
    kinds = Counter(span.kind for note in notes for span in note.spans)
    assert set(kinds) == set(KINDS)
    assert min(kinds.values()) >= 10
    assert len({note.genre for note in notes}) >= 10


def test_the_set_is_reproducible_from_its_seed() -> None:
    assert unseen_notes() == unseen_notes()
    assert unseen_notes(seed=1) != unseen_notes()


def test_vehicle_identification_numbers_have_seventeen_characters_and_no_i_o_q() -> None:
    vins = [s.text for note in unseen_notes() for s in note.spans if s.kind == "VEHICLE" and len(s.text) > 8]
    assert vins
    assert all(len(v) == 17 and not set(v) & set("IOQ") for v in vins)
