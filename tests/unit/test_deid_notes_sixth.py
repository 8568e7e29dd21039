"""The sixth note set's generator itself (no finder is run here): deterministic, exact spans, every
Safe Harbor type, enough notes, names of many origins, look-alikes left unplanted."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests import deid_sixth_pools as pools
from tests.deid_notes_sixth import DEFAULT_COUNT, SIXTH_SEED, sixth_notes
from tests.deid_sets import SETS, TYPES
from tests.deid_sixth_formats import P, Span, fill


@pytest.fixture(scope="module")
def notes():  # type: ignore[no-untyped-def]
    return sixth_notes()


def test_the_same_seed_gives_the_same_notes_and_another_seed_other_notes() -> None:
    # Prepare / Execute
    first, again, other = (
        sixth_notes(40, SIXTH_SEED),
        sixth_notes(40, SIXTH_SEED),
        sixth_notes(40, SIXTH_SEED + 1),
    )

    # Assert
    assert first == again
    assert [n.text for n in first] != [n.text for n in other]


def test_a_negative_count_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="n must be at least 0, got -1"):
        sixth_notes(-1)


def test_fill_records_each_planted_value_where_it_lands() -> None:
    # Prepare: a nested fragment, so that its span must be shifted by the text before it
    inner = fill("call {p}", {"p": P("608-555-0143", "PHONE")})

    # Execute
    frag = fill("Pt {n} (BP 120/80), {x}.", {"n": P("Zoë Núñez", "NAME"), "x": inner})

    # Assert: offsets counted by hand
    assert frag.text == "Pt Zoë Núñez (BP 120/80), call 608-555-0143."
    assert frag.spans == (Span(3, 12, "NAME"), Span(31, 43, "PHONE"))


def test_at_least_260_notes_by_default_in_many_genres(notes) -> None:  # type: ignore[no-untyped-def]
    assert DEFAULT_COUNT >= 260
    assert len(notes) == DEFAULT_COUNT
    genres = Counter(n.genre for n in notes)
    assert len(genres) >= 20
    assert min(genres.values()) >= DEFAULT_COUNT // len(genres) - 1


def test_spans_lie_in_the_text_do_not_overlap_and_are_trimmed(notes) -> None:  # type: ignore[no-untyped-def]
    for note in notes:
        previous_end = 0
        for span in note.spans:
            value = note.text[span.start : span.end]
            assert previous_end <= span.start < span.end <= len(note.text), (note.genre, span)
            assert value == value.strip() and value, (note.genre, span, value)
            assert span.kind in TYPES
            previous_end = span.end


# What each type's planted text must look like, written independently of the formats module.
_SHAPES = {
    "EMAIL": r"[\w.+-]+@[\w-]+(\.[\w-]+)+",
    "ZIP": r"\d{5}(-\d{4})?",
    "SSN": r"\d{3}[- ]?\d{2}[- ]?\d{4}|\d{4}",
    "IP_ADDRESS": r"(\d{1,3}\.){3}\d{1,3}|[0-9a-f:]+::[0-9a-f]+",
    "PHONE": r"[\d()+. -]{8,17}",
    "FAX": r"[\d()+. -]{8,17}",
    "PO_BOX": r"(?i)(P\.? ?O\.?|Post Office|POB)[ A-Za-z]*\d+",
    "URL": r"(https?://|www\.|facebook\.com/|instagram\.com/)\S+",
}


@pytest.mark.parametrize("kind", sorted(_SHAPES))
def test_planted_text_has_the_shape_of_its_type(notes, kind: str) -> None:  # type: ignore[no-untyped-def]
    values = [n.text[s.start : s.end] for n in notes for s in n.spans if s.kind == kind]
    bad = [v for v in values if not re.fullmatch(_SHAPES[kind], v)]
    assert values and not bad, bad[:5]


def test_ages_are_planted_only_over_89_and_bare_years_never(notes) -> None:  # type: ignore[no-untyped-def]
    words = set(pools.NUMBER_WORDS.values())
    for note in notes:
        for span in note.spans:
            value = note.text[span.start : span.end]
            if span.kind == "AGE_OVER_89":
                assert value in words or int(value) >= 90, value
            if span.kind == "DATE":
                assert not re.fullmatch(r"\d{4}", value), value
                assert re.search(r"\d", value), (
                    value
                )  # a date here always has a day, month or year in figures


def test_every_type_appears_at_least_40_times(notes) -> None:  # type: ignore[no-untyped-def]
    counts = Counter(s.kind for n in notes for s in n.spans)
    assert {kind: counts[kind] for kind in TYPES if counts[kind] < 40} == {}


def test_names_come_from_at_least_ten_origins(notes) -> None:  # type: ignore[no-untyped-def]
    # Counted from the planted text, not from what the generator says it drew
    planted = [n.text[s.start : s.end] for n in notes for s in n.spans if s.kind == "NAME"]
    names = " | ".join(planted).casefold()
    origins = {
        origin
        for origin, (_, surnames) in pools.ORIGINS.items()
        if any(s.casefold() in names for s in surnames)
    }
    assert len(origins) >= 10, sorted(origins)
    assert any(not c.isascii() for c in names)  # diacritics
    assert any(v.islower() for v in planted)  # typed by a patient
    assert any(v.isupper() and len(v) > 3 for v in planted)  # ALL CAPS
    assert any(re.fullmatch(r"[^,]+, [^,]+", v) for v in planted)  # surname first


_LOOK_ALIKES = (
    r"BP \d+/\d+",
    r"pain \d+/10",
    r"\b[LTCS]\d(-[LTCS]?\d+)?\b",
    r"\d+(\.\d+)? ?mg\b",
    r"\bRm \d+[AB]",
)


def test_clinical_look_alikes_are_present_and_unplanted(notes) -> None:  # type: ignore[no-untyped-def]
    found = Counter[str]()
    for note in notes:
        for pattern in _LOOK_ALIKES:
            for match in re.finditer(pattern, note.text):
                found[pattern] += 1
                overlapping = [s for s in note.spans if s.start < match.end() and match.start() < s.end]
                assert not overlapping, (match.group(), overlapping)
    assert all(found[p] >= 20 for p in _LOOK_ALIKES), found


def test_the_set_is_registered_for_the_scorer() -> None:
    build, seed = SETS["sixth"]
    labelled = build(30, seed)
    assert seed == SIXTH_SEED
    assert [n.text for n in labelled] == [n.text for n in sixth_notes(30, SIXTH_SEED)]
    assert all(n.planted for n in labelled)
