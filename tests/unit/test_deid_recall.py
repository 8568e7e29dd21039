"""The de-identifier's recall per HIPAA Safe Harbor type on 200 generated clinical notes, and the hospital
agent's data path using it.

The notes (tests/deid_notes.py) are written independently of the rules: names of many origins and none
from the rules' list of given names, facility names, cities alone, PO boxes, ages over 89 in digits and
words, SSNs in four formats. Identifiers count as removed only when none of their letters or digits is
left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from client_agent.agent import deidentified_hospital_data
from client_agent.deid_presidio import PresidioFinder
from client_agent.deid_rules import GIVEN_NAMES
from fedlora.cli import app
from tests.deid_notes import GIVEN, SafeHarbor, Score, evaluate, generate_notes
from tests.hospitals import hospital_settings

NOTES = generate_notes(200, seed=24)


@pytest.fixture(scope="module")
def presidio_score() -> Score:
    return evaluate(PresidioFinder(), NOTES)


def test_the_notes_hold_every_type_with_exact_spans_and_names_off_the_rules_list() -> None:
    planted = [p for note in NOTES for p in note.planted]

    assert len(NOTES) == 200
    assert {p.kind for p in planted} == set(SafeHarbor)
    assert all(note.text[p.start : p.end] == p.value for note in NOTES for p in note.planted)
    assert not GIVEN_NAMES & set(GIVEN)


@pytest.mark.parametrize("kind", list(SafeHarbor))
def test_recall_is_at_least_95_percent_on_every_safe_harbor_type(
    presidio_score: Score, kind: SafeHarbor
) -> None:
    assert presidio_score.recall(kind) >= 0.95, [m for m in presidio_score.misses if m[0] == kind][:5]


def test_precision_stays_high(presidio_score: Score) -> None:
    """Over-redaction costs the model its training text; the filler around the identifiers holds drugs,
    doses, eponyms and ages under 90 that must stay."""
    assert presidio_score.precision() >= 0.95


def test_the_agents_data_path_removes_what_our_rules_alone_missed(tmp_path: Path) -> None:
    """The hospital agent de-identifies with the Presidio-based finder unless its settings say "rules"."""
    note = (
        "Transferred from Beth Israel Deaconess Medical Center. Daughter Nkechi Okonkwo lives in Lowell; "
        "she is ninety-four years old. SSN 482 61 7305."
    )
    path = tmp_path / "notes.csv"
    path.write_text(f'text,label\n"{note}",yes\n', encoding="utf-8")
    settings = hospital_settings(tmp_path, data_file=path)

    clean, counts = deidentified_hospital_data(settings)
    by_rules, _ = deidentified_hospital_data(settings.model_copy(update={"deid_engine": "rules"}))

    assert settings.deid_engine == "presidio"
    assert clean.texts == [
        "Transferred from [FACILITY]. Daughter [NAME] lives in [ADDRESS]; she is [AGE] years old. SSN [ID]."
    ]
    assert counts == {"FACILITY": 1, "NAME": 1, "ADDRESS": 1, "AGE": 1, "ID": 1}
    assert "[NAME] Deaconess Medical Center" in by_rules.texts[0] and "7305" in by_rules.texts[0]


def test_an_unknown_deid_engine_is_refused_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.csv")  # refused before the data is read

    result = CliRunner().invoke(app, ["train-local", "--data", missing, "--deid-engine", "regex"])

    assert result.exit_code == 2
    assert "--deid-engine" in result.output and "regex" in result.output
    assert "cannot read file" not in result.output
    with pytest.raises(ValidationError, match="deid_engine"):
        hospital_settings(tmp_path, deid_engine="regex")
