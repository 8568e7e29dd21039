"""Adversarial review of issue 24's de-identification: the default finder (Presidio with our rules) on notes
from a second, independent generator (tests/deid_notes_independent.py, written without reading
tests/deid_notes.py or the finders' patterns).

The claim under review: recall >= 0.95 on every HIPAA Safe Harbor type present, facility names included.
Measured on 160 of the independent notes (seed 2024; 1,640 planted identifiers, 460 planted
non-identifiers), an identifier counting as removed only when none of its letters or digits is left:
recall holds for fax numbers, emails, SSNs, account numbers and IP addresses, and falls short everywhere
else. Each type that falls short is a strict xfail whose docstring gives the measured figure and the kind of
value missed; remove the marker when the finder is fixed.
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
    """Presidio with our rules never does worse than our rules alone on a type (overall 0.697 vs 0.460)."""
    assert all(default_score.recall(kind) >= rules_score.recall(kind) for kind in Kind)


def test_planted_non_identifiers_mostly_survive(default_score: IndependentScore) -> None:
    """Drugs, eponyms, clinical words, "may"/"march" as words, years and ages under 90: 0.957 of them are
    left whole; the losses are two-letter state codes after a city (allowed by Safe Harbor), "Sinemet" and
    "Social Work". Of the removed spans, 0.977 overlap a planted identifier ("SENDING" in an ALL CAPS header
    became [NAME])."""
    assert default_score.decoy_precision() >= 0.95
    assert default_score.span_precision() >= 0.95


_XFAIL = pytest.mark.xfail(strict=True, reason="issue 24 review: recall below 0.95 on independent notes")


@_XFAIL
def test_names(default_score: IndependentScore) -> None:
    """Names: 0.708 (360 planted; our rules 0.308). Kept: every ALL CAPS "SURNAME, GIVEN" after "REF PHYS:"
    and most after "PT NAME", every lower-case name in staff chat ("bed 12 is agnieszka szczepańska", "son
    yetunde says"), "Surname, Given" in a table ("Kowalczyk, Małgorzata"), and the second half of a Spanish
    double surname ("Follow-up with [NAME] Villanueva Soto")."""
    _assert_recall(default_score, Kind.NAME)


@_XFAIL
def test_street_addresses(default_score: IndependentScore) -> None:
    """Street addresses: 0.338 (80; rules 0.263). Kept: "1163 N. Bellflower Blvd #323", "Flat 4, 8167
    Juniper Ridge Way", "RURAL ROUTE 3", "RR 6 BOX 347", any address in lower case."""
    _assert_recall(default_score, Kind.STREET_ADDRESS)


@_XFAIL
def test_cities(default_score: IndependentScore) -> None:
    """Cities: 0.417 (120; rules 0.125). Kept: a city on a letterhead line before its ZIP ("Quenton 95850",
    "Eau Claire 31265"), after a street address ("Cedar Hollow, Montana"), in capitals or lower case."""
    _assert_recall(default_score, Kind.CITY)


@_XFAIL
def test_zip_codes(default_score: IndependentScore) -> None:
    """ZIP codes: 0.267 (60; rules 0.267). A ZIP after a city the finder did not recognise is kept
    ("Lewiston 83996-9272", "Cedar Hollow, Montana 30260")."""
    _assert_recall(default_score, Kind.ZIP)


@_XFAIL
def test_facilities(default_score: IndependentScore) -> None:
    """Facilities: 0.457 (140; rules 0.000). Kept: facilities in capitals ("TRANSFER FROM OGUNLEYE PEDIATRICS
    TO MERCY VALLEY MEDICAL CENTER"), a short name in chat ("came in from riverbend"), a letterhead line
    ("Fairhaven Women's Health")."""
    _assert_recall(default_score, Kind.FACILITY)


@_XFAIL
def test_dates(default_score: IndependentScore) -> None:
    """Dates: 0.728 (180; rules 0.611). Kept: "MAR 08 2023", "17 JUL 2016", "JANUARY 14, 2015", a month and
    day without a year ("Last visit: 9/21", "Discharged: 12/18")."""
    _assert_recall(default_score, Kind.DATE)


@_XFAIL
def test_ages_over_89(default_score: IndependentScore) -> None:
    """Ages over 89: 0.820 (100; rules 0.440). Kept: "93F", "97 yrs", "92 y.o.", "98 years of age"."""
    _assert_recall(default_score, Kind.AGE_OVER_89)


@_XFAIL
def test_phone_numbers(default_score: IndependentScore) -> None:
    """Phone numbers: 0.943 (140; rules 0.807). Seven-digit local numbers ("483-5890") are kept."""
    _assert_recall(default_score, Kind.PHONE)


@_XFAIL
def test_medical_record_numbers(default_score: IndependentScore) -> None:
    """MRNs: 0.917 (60; rules 0.917). A record number without an "MRN" label ("flagged her chart
    95764-216") is kept."""
    _assert_recall(default_score, Kind.MRN)


@_XFAIL
def test_health_plan_numbers(default_score: IndependentScore) -> None:
    """Health plan numbers: 0.850 (40; rules 0.850). "Insurance: 35A-8807-26" is kept."""
    _assert_recall(default_score, Kind.HEALTH_PLAN)


@_XFAIL
def test_licence_numbers(default_score: IndependentScore) -> None:
    """Licence numbers: 0.700 (40; rules 0.700). "Driver's licence: D7859-5910-5423" is kept."""
    _assert_recall(default_score, Kind.LICENCE)


@_XFAIL
def test_vehicle_identifiers(default_score: IndependentScore) -> None:
    """Vehicle identifiers: 0.000 (20; rules 0.000). Neither plates ("plate 1ZUL320") nor VINs
    ("1HGCM61472A745880") are found: no recogniser covers them."""
    _assert_recall(default_score, Kind.VEHICLE)


@_XFAIL
def test_device_serial_numbers(default_score: IndependentScore) -> None:
    """Device serials: 0.250 (20; rules 0.250). "Pacemaker serial 8G-4050-B", "... serial 17976-493" are
    kept."""
    _assert_recall(default_score, Kind.DEVICE)


@_XFAIL
def test_urls(default_score: IndependentScore) -> None:
    """URLs: 0.600 (40; rules 0.600). A URL without a scheme or "www." ("instagram.com/hoa.nguyen",
    "facebook.com/folasade.a.90") is kept."""
    _assert_recall(default_score, Kind.URL)
