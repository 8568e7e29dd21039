"""The default de-identifier on the fifth note set (tests/deid_notes_fifth.py), which nobody has fitted it to.

Issue 24's bar (recall at least 0.95 on every Safe Harbor type) is not met there yet (docs/deid.md gives the
figures: 0.937 overall after the unseen set's fixes, 0.972 after the general classes' fixes, whose author was
told the classes this set's misses fell into, never the set or its values). These tests keep what was measured from slipping:
overall recall and precision may not fall below the figures of docs/results/deid/fifth.md, and the types
that met the bar keep it. They must never be made to pass by fitting the finder to this set's own values:
its misses are fixed, if at all, by general rules checked on sentences written elsewhere.
"""

from __future__ import annotations

import pytest

from client_agent.deid_presidio import PresidioFinder
from tests.deid_sets import SETS, SetScore, score

BUILD, SEED = SETS["fifth"]
#: Types at or above 0.95 when the set was last scored (docs/results/deid/fifth.md).
MET = ("PO_BOX", "CITY", "ZIP", "AGE_OVER_89", "PHONE", "FAX", "EMAIL", "MRN", "ACCOUNT", "HEALTH_PLAN")
MET += ("DEVICE", "URL", "IP_ADDRESS", "DATE", "SSN", "LICENCE", "VEHICLE")


@pytest.fixture(scope="module")
def fifth_score() -> SetScore:
    return score(PresidioFinder(), BUILD(260, SEED))


def test_overall_recall_and_precision_do_not_fall_below_the_measured_figures(fifth_score: SetScore) -> None:
    assert fifth_score.recall() >= 0.97
    assert fifth_score.precision() >= 0.96


@pytest.mark.parametrize("kind", MET)
def test_the_types_that_met_the_bar_keep_it(fifth_score: SetScore, kind: str) -> None:
    assert fifth_score.recall(kind) >= 0.95, [m for m in fifth_score.misses if m[0] == kind][:5]
