"""The default de-identifier on the fourth note set (tests/deid_notes_unseen.py), and the rules its misses
led to, each on sentences written for this test.

The set was written without reading the de-identifier and scored before any change (docs/results/deid/
unseen.md keeps that table). The rules below were then written from its misses, as general forms and
word lists, never its names, places or facilities; since then the set is fitted to and no longer
measures unseen recall. Recall counts an identifier as removed only when none of its letters or digits
is left (tests/deid_sets.py).
"""

from __future__ import annotations

import pytest

from client_agent.deid_presidio import PresidioFinder
from tests.deid_sets import SETS, SetScore, score, unseen_set

_, SEED = SETS["unseen"]
NOTES = unseen_set(240, SEED)


@pytest.fixture(scope="module")
def finder() -> PresidioFinder:
    return PresidioFinder()


@pytest.fixture(scope="module")
def unseen_score(finder: PresidioFinder) -> SetScore:
    return score(finder, NOTES)


def _found(finder: PresidioFinder, text: str) -> list[tuple[str, str]]:
    return [(span.kind.value, text[span.start : span.end]) for span in finder.find(text)]


@pytest.mark.parametrize("kind", sorted({kind for note in NOTES for _, _, kind in note.planted}))
def test_recall_is_at_least_95_percent_on_every_type(unseen_score: SetScore, kind: str) -> None:
    assert unseen_score.recall(kind) >= 0.95, [m for m in unseen_score.misses if m[0] == kind][:5]


def test_precision_stays_high(unseen_score: SetScore) -> None:
    assert unseen_score.precision() >= 0.95, unseen_score.false_positives[:10]
    assert unseen_score.precision("FACILITY") > 0.9, [
        fp for fp in unseen_score.false_positives if fp[0] == "FACILITY"
    ][:10]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a laboratory's accession number
        ("Accession: H21-00417\nGross description follows.", [("ID", "H21-00417")]),
        ("Surgical pathology no. SP-88120 received.", [("ID", "SP-88120")]),
        # the weekday of a date is part of it; month and day after a verb that announces a date
        ("Clinic visit Thursday, October 3 went well.", [("DATE", "Thursday, October 3")]),
        ("Returned on Mon 11/4 for labs.", [("DATE", "Mon 11/4")]),
        ("Wound check 2/10. Healing.", [("DATE", "2/10")]),
        ("Message sent 9/3 7:15 AM to the family.", [("DATE", "9/3")]),
        ("11/18\n\nTo whom it may concern:", [("DATE", "11/18")]),
        # a number with its extension
        ("Reach the office at 608-555-0142 ext. 31 weekdays.", [("PHONE", "608-555-0142 ext. 31")]),
        ("Desk (414) 555-0199 x7 staffed.", [("PHONE", "(414) 555-0199 x7")]),
        # an SSN written with spaces after its label, even where its first group is not a valid one
        ("SSN 900 12 3456 on the form.", [("ID", "900 12 3456")]),
    ],
)
def test_ids_dates_and_phones(finder: PresidioFinder, text: str, expected: list[tuple[str, str]]) -> None:
    assert _found(finder, text) == expected


@pytest.mark.parametrize(
    ("text", "name"),
    [
        # "LAST, FIRST M" keeps its middle initial with it; particles and "ST." in capitals
        ("Attending: OYELARAN, TEMPERANCE K, MD", "OYELARAN, TEMPERANCE K"),
        ("Daughter DOS SANTOS, IRACEMA J was present.", "DOS SANTOS, IRACEMA J"),
        ("Key with neighbour ST. CLAIRE, MARGUERITE today.", "ST. CLAIRE, MARGUERITE"),
        # a surname that is an English word or an eponym, before a given name that is not
        ("Prescriber: WALKER, OLUWAKEMI R, DEA on file", "WALKER, OLUWAKEMI R"),
        ("Re: Nelson Oluwadamilare, DOB on file", "Nelson Oluwadamilare"),
        # a name after "NP", with several hyphens, and an -ed name that is no English verb
        ("Discussed with NP Ana-Lucia Ortiz-Ruiz-Vega today.", "Ana-Lucia Ortiz-Ruiz-Vega"),
        ("From: Winifred Abernathy <wa@example.org>", "Winifred Abernathy"),
        # lower case in a person's field or after a role
        ("Patient: zainab okafor, MRN 5531209", "zainab okafor"),
        ("Prescriber: tomasz wierzbicki, DEA on file", "tomasz wierzbicki"),
        ("Case manager ngozi eze, 555-0110", "ngozi eze"),
        ("Social worker siobhan o'keeffe, LICSW, called.", "siobhan o'keeffe"),
        # a comma name before a credential, with particles or an English given name and an initial
        ("Assistant: De la Fuente, Inmaculada, PA-C", "De la Fuente, Inmaculada"),
        ("Charge nurse: ABERNATHY, GRACE L, RN on duty", "ABERNATHY, GRACE L"),
        # after "Mr."/"Ms." a surname that is a verb; a patient named in a letter
        ("Mr. Wished is stable.", "Wished"),
        ("I write on behalf of my patient, Oyelaran Ifeoma, about coverage.", "Oyelaran Ifeoma"),
    ],
)
def test_names(finder: PresidioFinder, text: str, name: str) -> None:
    assert ("NAME", name) in _found(finder, text)


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        # a facility on the letterhead, under a signer's credential, or after a cue
        ("ORTHOPEDIC CONSULT\nHarborview\nPatient seen for knee pain.", "Harborview", "FACILITY"),
        ("OPERATIVE NOTE\nWestbury - Main OR\nSurgeon: Dr. Kline", "Westbury", "FACILITY"),
        ("Regards,\nT. Amadi, MD\nLakeshore Methodist\n", "Lakeshore Methodist", "FACILITY"),
        ("Her husband works at Brackenridge as a porter.", "Brackenridge", "FACILITY"),
        ("Follow-up with Dr. Osei at Crestmoor on 3/2.", "Crestmoor", "FACILITY"),
        ("Prior admission to Elmhurst Manor in 2019.", "Elmhurst Manor", "FACILITY"),
        ("Discharged to St. Brigid's Home with hospice.", "St. Brigid's Home", "FACILITY"),
        ("Seen at Oakridge Family Health last week.", "Oakridge Family Health", "FACILITY"),
        ("Outside imaging from Kettering dated last spring.", "Kettering", "FACILITY"),
        # a city after a flat number, a place a patient is from
        ("Moved to 12 Birch Lane, Apt 3F, Mankato, with her son.", "Mankato", "ADDRESS"),
        ("A 58-year-old welder from Ypsilanti, here for chest pain.", "Ypsilanti", "ADDRESS"),
        # Spanish and Portuguese street names
        (
            "Lives at 845 Calle de los Almendros Ave, Apt 2.",
            "845 Calle de los Almendros Ave, Apt 2",
            "ADDRESS",
        ),
        ("Address 77 Rua das Laranjeiras on file.", "77 Rua das Laranjeiras", "ADDRESS"),
    ],
)
def test_places_and_facilities(finder: PresidioFinder, text: str, value: str, kind: str) -> None:
    # a span of the kind covers the value (spaCy may take a word more: "Westbury - Main")
    found = _found(finder, text)
    assert any(k == kind and value in v for k, v in found), found


@pytest.mark.parametrize(
    "text",
    [
        # headings and services, not facilities
        "DERMATOLOGY WOUND CLINIC\nFollow-up of a venous ulcer.",
        "SLEEP MEDICINE CLINIC note for CPAP titration.",
        "Discharge Summary\nCourse uncomplicated.",
        "Chief Complaint\nChest pain for two days.",
        "History of Present Illness\nShe reports a cough.",
        # eponymous scores, drains and grades
        "Braden score 16 on admission.",
        "Penrose drain removed on day two.",
        "Killip II on arrival.",
        "Gleason 4+3 in two cores.",
        # look-alikes of dates, numbers and labels
        "Apgar 9/9 at five minutes.",
        "A 4 mm nodule on the MAR. 4 mm unchanged.",
        "EF 45-50% on echo. PHQ-9 score 11.",
        "Triage RN: to reassess in one hour.",
        "Serial 4471. Levels C4-C5 and T12-L1 narrowed.",
        "Given ABVD in 2011. Reviewer: on leave.",
        "Switched from Zoloft in March.",
    ],
)
def test_clinical_text_is_kept(finder: PresidioFinder, text: str) -> None:
    assert _found(finder, text) == []
