"""Adversarial review of issue 24's de-identification: the default finder (Presidio with our rules) on notes
from a second, independent generator (tests/deid_notes_independent.py, written without reading
tests/deid_notes.py or the finders' patterns).

The claim under review: recall >= 0.95 on every HIPAA Safe Harbor type present, facility names included.
Measured on 160 of the independent notes (seed 2024; 1,640 planted identifiers, 460 planted
non-identifiers), an identifier counting as removed only when none of its letters or digits is left. The
review found 14 types short of 0.95; each test below names the kind of value the finder used to keep and
now removes (a case-normalised second pass for capitals and lower-case lines, role labels, context words
for bare numbers and dates; docs/deid.md).
"""

from __future__ import annotations

import pytest

from client_agent.deid_presidio import PresidioFinder
from client_agent.deid_rules import RuleFinder
from tests.deid_notes_independent import IndependentScore, Kind, generate_independent_notes, score_notes

NOTES = generate_independent_notes(160, seed=2024)


@pytest.fixture(scope="module")
def default_score() -> IndependentScore:
    return score_notes(PresidioFinder(), NOTES)


@pytest.fixture(scope="module")
def rules_score() -> IndependentScore:
    return score_notes(RuleFinder(), NOTES)


def _assert_recall(score: IndependentScore, kind: Kind) -> None:
    misses = [(value, line) for k, value, line in score.misses if k is kind]
    assert score.recall(kind) >= 0.95, misses[:5]


def test_the_notes_plant_every_type_at_exact_spans() -> None:
    planted = [p for note in NOTES for p in note.planted]

    assert {p.kind for p in planted} == {*Kind, None}
    assert all(note.text[p.start : p.end] == p.value for note in NOTES for p in note.planted)


@pytest.mark.parametrize("kind", [Kind.FAX, Kind.EMAIL, Kind.SSN, Kind.ACCOUNT, Kind.IP_ADDRESS])
def test_recall_holds(default_score: IndependentScore, kind: Kind) -> None:
    """Fax numbers, emails, SSNs (dashes, spaces, dots, none), labelled account numbers and IPv4/IPv6
    addresses are all removed (recall 1.000)."""
    _assert_recall(default_score, kind)


def test_the_default_removes_at_least_what_our_rules_removed(
    default_score: IndependentScore, rules_score: IndependentScore
) -> None:
    """Presidio with our rules never does worse than our rules alone on a type (overall 0.985 vs 0.460; the review measured 0.697)."""
    assert all(default_score.recall(kind) >= rules_score.recall(kind) for kind in Kind)


def test_planted_non_identifiers_mostly_survive(default_score: IndependentScore) -> None:
    """Drugs, eponyms, clinical words, "may"/"march" as words, years and ages under 90: 0.957 of them are
    left whole; the losses are two-letter state codes after a city (allowed by Safe Harbor), "Sinemet" and
    "Social Work". Of the removed spans, at least 0.95 overlap a planted identifier: the case-normalised pass for
    capitals and lower-case lines must not buy recall with over-redaction."""
    assert default_score.decoy_precision() >= 0.95
    assert default_score.span_precision() >= 0.95


def test_names(default_score: IndependentScore) -> None:
    """Names: recall at least 0.95 (the review measured 0.708; our rules 0.308). Once kept, now removed:
    ALL CAPS "SURNAME, GIVEN" after "REF PHYS:" and "PT NAME", lower-case names in staff chat ("bed 12 is
    agnieszka szczepańska", "son yetunde says"), "Surname, Given" in a table ("Kowalczyk, Małgorzata"),
    and the second half of a Spanish double surname ("Follow-up with [NAME] Villanueva Soto")."""
    _assert_recall(default_score, Kind.NAME)


def test_street_addresses(default_score: IndependentScore) -> None:
    """Street addresses: recall at least 0.95 (the review measured 0.338). Once kept, now removed: "1163
    N. Bellflower Blvd #323", "Flat 4, 8167 Juniper Ridge Way", "RURAL ROUTE 3", "RR 6 BOX 347", an address
    in lower case."""
    _assert_recall(default_score, Kind.STREET_ADDRESS)


def test_cities(default_score: IndependentScore) -> None:
    """Cities: recall at least 0.95 (the review measured 0.417). Once kept, now removed: a city on a
    letterhead line before its ZIP ("Quenton 95850", "Eau Claire 31265"), after a street address ("Cedar
    Hollow, Montana"), in capitals or lower case."""
    _assert_recall(default_score, Kind.CITY)


def test_zip_codes(default_score: IndependentScore) -> None:
    """ZIP codes: recall at least 0.95 (the review measured 0.267). Once kept, now removed: a ZIP after a
    city the finder did not recognise ("Lewiston 83996-9272", "Cedar Hollow, Montana 30260")."""
    _assert_recall(default_score, Kind.ZIP)


def test_facilities(default_score: IndependentScore) -> None:
    """Facilities: recall at least 0.95 (the review measured 0.457). Once kept, now removed: facilities in
    capitals ("TRANSFER FROM OGUNLEYE PEDIATRICS TO MERCY VALLEY MEDICAL CENTER"), a short name in chat
    ("came in from riverbend"), a letterhead line ("Fairhaven Women's Health")."""
    _assert_recall(default_score, Kind.FACILITY)


def test_dates(default_score: IndependentScore) -> None:
    """Dates: recall at least 0.95 (the review measured 0.728). Once kept, now removed: "MAR 08 2023", "17
    JUL 2016", "JANUARY 14, 2015", a month and day without a year ("Last visit: 9/21", "Discharged: 12/18")."""
    _assert_recall(default_score, Kind.DATE)


def test_ages_over_89(default_score: IndependentScore) -> None:
    """Ages over 89: recall at least 0.95 (the review measured 0.820). Once kept, now removed: "93F", "97
    yrs", "92 y.o.", "98 years of age"."""
    _assert_recall(default_score, Kind.AGE_OVER_89)


def test_phone_numbers(default_score: IndependentScore) -> None:
    """Phone numbers: recall at least 0.95 (the review measured 0.943). Once kept, now removed: seven-digit
    local numbers ("483-5890") beside a word that says so."""
    _assert_recall(default_score, Kind.PHONE)


def test_medical_record_numbers(default_score: IndependentScore) -> None:
    """MRNs: recall at least 0.95 (the review measured 0.917). Once kept, now removed: a record number
    without an "MRN" label ("flagged her chart 95764-216")."""
    _assert_recall(default_score, Kind.MRN)


def test_health_plan_numbers(default_score: IndependentScore) -> None:
    """Health plan numbers: recall at least 0.95 (the review measured 0.850). Once kept, now removed:
    "Insurance: 35A-8807-26"."""
    _assert_recall(default_score, Kind.HEALTH_PLAN)


def test_licence_numbers(default_score: IndependentScore) -> None:
    """Licence numbers: recall at least 0.95 (the review measured 0.700). Once kept, now removed: "Driver's
    licence: D7859-5910-5423"."""
    _assert_recall(default_score, Kind.LICENCE)


def test_vehicle_identifiers(default_score: IndependentScore) -> None:
    """Vehicle identifiers: recall at least 0.95 (the review measured 0.000). Once kept, now removed:
    plates after "plate" ("plate 1ZUL320") and 17-character VINs ("1HGCM61472A745880")."""
    _assert_recall(default_score, Kind.VEHICLE)


def test_device_serial_numbers(default_score: IndependentScore) -> None:
    """Device serials: recall at least 0.95 (the review measured 0.250). Once kept, now removed:
    "Pacemaker serial 8G-4050-B", "... serial 17976-493"."""
    _assert_recall(default_score, Kind.DEVICE)


def test_urls(default_score: IndependentScore) -> None:
    """URLs: recall at least 0.95 (the review measured 0.600). Once kept, now removed: a URL without a
    scheme or "www." ("instagram.com/hoa.nguyen", "facebook.com/folasade.a.90")."""
    _assert_recall(default_score, Kind.URL)
