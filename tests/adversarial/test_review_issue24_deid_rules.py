"""Adversarial review of the de-identifier's newest hand-written rules (commits f97a1e6..0213e66, 530e0fc).

Two promises are under review. (1) No malformed input stops a round: a hospital's text, however long or
strange, is de-identified in bounded time and without an exception. (2) The classes those commits claim
(street units and directions, partial SSNs, facilities, plates, licences, name cues, month/day dates) are
removed in the forms people write them, and ordinary clinical text is kept.

The timing tests feed the default finder about 50 kB of one shape built to make a regular expression
backtrack (a run of spaces, one long hyphenated word, a run of particles), and compare the time with an
ordinary note of the same length: before the fixes each shape took minutes (quadratic or cubic
backtracking in a lookbehind or a lookahead, or spaCy's tokenizer on one long token of punctuation), so the bound (five seconds plus four times the ordinary
note) is far from both.
"""

from __future__ import annotations

import time

import pytest

from client_agent.deid import Deidentifier
from client_agent.deid_presidio import PresidioFinder

_LENGTH = 50_000
_ORDINARY = (
    "Pt is a 54 yo man seen today for BP 120/80, pain 7/10, L4-L5 stenosis, metoprolol 25 mg daily. "
    "Plan: PT twice weekly, recheck labs, return if worse. "
)


@pytest.fixture(scope="module")
def deidentifier() -> Deidentifier:
    return Deidentifier(finder=PresidioFinder())


@pytest.fixture(scope="module")
def ordinary_seconds(deidentifier: Deidentifier) -> float:
    """How long an ordinary note of the same length takes on this machine, now."""
    text = (_ORDINARY * (_LENGTH // len(_ORDINARY) + 1))[:_LENGTH]
    start = time.perf_counter()
    deidentifier.deidentify(text)
    return time.perf_counter() - start


def _seconds(deidentifier: Deidentifier, text: str) -> float:
    start = time.perf_counter()
    deidentifier.deidentify(text)
    return time.perf_counter() - start


def _repeat(unit: str, prefix: str = "") -> str:
    return prefix + (unit * (_LENGTH // len(unit) + 1))[: _LENGTH - len(prefix)]


# (id, text): each a shape that made one of the rules' expressions backtrack without bound
BACKTRACKING_SHAPES: list[tuple[str, str]] = [
    # the month/day-after-a-cue lookbehinds ("LMP 10/2", "on 3/4") and the plate lookbehind and
    # lookaheads: adjacent unbounded runs of [ \t] scanned again at every position of the run
    ("spaces", _repeat(" ")),
    ("tabs", _repeat("\t")),
    ("spaces-after-plate", _repeat(" ", "Plate ")),
    ("spaces-after-lmp", _repeat(" ", "LMP: ")),
    # a lower-case name before a credential: a word boundary inside one long hyphenated word
    ("hyphenated-lower-case-word", _repeat("xxx-xx-")),
    # a name before a credential or an age: a capital after every hyphen or apostrophe of one word
    ("hyphenated-capitalised-word", _repeat("Ab-")),
    ("apostrophes-in-a-word", _repeat("Aa'")),
    # a surname's particles ("Ó Briain", "de la Cruz") repeated without a surname after them
    ("run-of-particles", _repeat("Ó ")),
    # a facility's head noun after capitalised words: a word boundary after every hyphen
    ("hyphenated-capitals-and-digits", _repeat("A1-")),
    # spaCy's tokenizer strips a suffix or prefix character from a token at a time, each strip rescanning
    # the token: one long token of punctuation, or of "'s", took minutes
    ("run-of-apostrophes", _repeat("'")),
    ("run-of-possessives", _repeat("'s")),
    ("run-of-percent-signs", _repeat("%")),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("text", [t for _, t in BACKTRACKING_SHAPES], ids=[i for i, _ in BACKTRACKING_SHAPES])
def test_a_malformed_note_is_deidentified_in_bounded_time(
    deidentifier: Deidentifier, ordinary_seconds: float, text: str
) -> None:
    """Promise (1): a note of 50 kB, whatever its shape, is de-identified in time of the order of an
    ordinary note of that length; these shapes made a new rule backtrack for minutes."""
    bound = 5.0 + 4 * ordinary_seconds

    seconds = _seconds(deidentifier, text)

    assert seconds < bound, f"{seconds:.1f}s for a {len(text)}-character note (bound {bound:.1f}s)"


def test_a_lone_surrogate_does_not_stop_the_round(deidentifier: Deidentifier) -> None:
    """Promise (1): a lone UTF-16 surrogate (what ``json.loads`` makes of a broken ``"\\ud83d"`` escape
    in a hospital's JSON lines) made spaCy's tokenizer raise UnicodeEncodeError; the note must still be
    de-identified, its names removed and its length of characters around them kept."""
    text = "Seen by Dr. Hannah Okafor today \ud83d, then sent home."

    out, counts = deidentifier.deidentify(text)

    assert "Okafor" not in out
    assert counts["NAME"] == 1
    assert out.startswith("Seen by Dr. ") and out.endswith(", then sent home.")
