"""The default de-identifier on the sixth note set (tests/deid_notes_sixth.py), the one set nobody has fitted it
to, nor told a fixer anything about.

Written by a helper who read neither the de-identifier nor the other sets, committed (fe1c77a) before it was
first scored: recall 0.874 then, 0.888 after the general classes' fixes (whose author never saw this set;
docs/results/deid/sixth.md). Issue 24's bar (0.95 on every Safe Harbor type) is far from met here. These tests
keep what was measured from slipping; they must never be made to pass by fitting the finder to this set: once
its misses are used to fix the finder, it stops measuring anything and a seventh set has to be written.
"""

from __future__ import annotations

import pytest

from client_agent.deid_presidio import PresidioFinder
from tests.deid_sets import SETS, SetScore, score

BUILD, SEED = SETS["sixth"]
#: Types at or above 0.95 when the set was last scored (docs/results/deid/sixth.md).
MET = ("CITY", "ZIP", "PHONE", "FAX", "EMAIL", "SSN", "MRN", "VEHICLE", "URL", "IP_ADDRESS")


@pytest.fixture(scope="module")
def sixth_score() -> SetScore:
    return score(PresidioFinder(), BUILD(260, SEED))


def test_overall_recall_and_precision_do_not_fall_below_the_measured_figures(sixth_score: SetScore) -> None:
    assert sixth_score.recall() >= 0.885
    assert sixth_score.precision() >= 0.945


@pytest.mark.parametrize("kind", MET)
def test_the_types_that_met_the_bar_keep_it(sixth_score: SetScore, kind: str) -> None:
    assert sixth_score.recall(kind) >= 0.95, [m for m in sixth_score.misses if m[0] == kind][:5]
