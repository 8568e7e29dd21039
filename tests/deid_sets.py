"""The six synthetic note sets in one form, and one scorer for all of them.

Each generator records its planted identifiers its own way (`tests/deid_notes.py`,
`tests/deid_notes_independent.py`, `tests/deid_notes_heldout.py`,
`tests/deid_notes_unseen.py`, `tests/deid_notes_fifth.py`, `tests/deid_notes_sixth.py`); here each note becomes a text with
`(start, end, type)` triples under one vocabulary of Safe Harbor types, so that a finder is measured the
same way on all six. The criterion is the one the first two scorers use: an identifier counts as
removed only when every letter and digit of it lies inside a removed span (an SSN that keeps six digits
is a miss), and a removed span that overlaps no planted identifier is a false positive.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from client_agent.phi import PHIFinder
from tests.deid_notes import generate_notes
from tests.deid_notes_fifth import FIFTH_SEED, fifth_notes
from tests.deid_notes_heldout import heldout_notes
from tests.deid_notes_independent import generate_independent_notes
from tests.deid_notes_sixth import SIXTH_SEED, sixth_notes
from tests.deid_notes_unseen import UNSEEN_SEED, unseen_notes

# Safe Harbor types in the order tables list them; every set's own names map onto these.
TYPES = (
    "NAME", "FACILITY", "STREET_ADDRESS", "PO_BOX", "CITY", "ZIP", "DATE", "AGE_OVER_89", "PHONE", "FAX",
    "EMAIL", "SSN", "MRN", "ACCOUNT", "HEALTH_PLAN", "LICENCE", "DEVICE", "VEHICLE", "URL", "IP_ADDRESS",
)  # fmt: skip
_HELDOUT_TYPES = {"STREET": "STREET_ADDRESS", "AGE": "AGE_OVER_89", "LICENSE": "LICENCE", "IP": "IP_ADDRESS"}


@dataclass(frozen=True)
class LabelledNote:
    text: str
    planted: tuple[tuple[int, int, str], ...]  # (start, end, one of TYPES)


def first_set(n: int, seed: int) -> list[LabelledNote]:
    """`tests/deid_notes.py`, written alongside the rules."""
    return [
        LabelledNote(note.text, tuple((p.start, p.end, str(p.kind)) for p in note.planted))
        for note in generate_notes(n, seed=seed)
    ]


def independent_set(n: int, seed: int) -> list[LabelledNote]:
    """`tests/deid_notes_independent.py`, the review's set (its planted non-identifiers are dropped:
    a span over one is a false positive here as over any other filler)."""
    return [
        LabelledNote(
            note.text, tuple((p.start, p.end, str(p.kind)) for p in note.planted if p.kind is not None)
        )
        for note in generate_independent_notes(n, seed=seed)
    ]


def heldout_set(n: int, seed: int) -> list[LabelledNote]:
    """`tests/deid_notes_heldout.py`, written before its author read the de-identifier."""
    return [
        LabelledNote(
            note.text, tuple((s.start, s.end, _HELDOUT_TYPES.get(s.kind, s.kind)) for s in note.spans)
        )
        for note in heldout_notes(n, seed=seed)
    ]


def unseen_set(n: int, seed: int) -> list[LabelledNote]:
    """`tests/deid_notes_unseen.py`, written without reading the de-identifier or the other sets, and
    never used to tune it: its types are already this module's."""
    return [
        LabelledNote(note.text, tuple((s.start, s.end, s.kind) for s in note.spans))
        for note in unseen_notes(seed=seed, count=n)
    ]


def fifth_set(n: int, seed: int) -> list[LabelledNote]:
    """`tests/deid_notes_fifth.py`, written without reading the de-identifier or the other sets, and
    committed before it was ever scored: its types are already this module's."""
    return [
        LabelledNote(note.text, tuple((s.start, s.end, s.kind) for s in note.spans))
        for note in fifth_notes(seed=seed, count=n)
    ]


def sixth_set(n: int, seed: int) -> list[LabelledNote]:
    """`tests/deid_notes_sixth.py`, written by a helper with a fresh context without reading the
    de-identifier or the other sets, and committed before it was first scored: its types are already
    this module's."""
    return [
        LabelledNote(note.text, tuple((s.start, s.end, s.kind) for s in note.spans))
        for note in sixth_notes(n, seed=seed)
    ]


# (name, builder, default seed)
SETS: dict[str, tuple[Callable[[int, int], list[LabelledNote]], int]] = {
    "first": (first_set, 24),
    "independent": (independent_set, 2024),
    "held-out": (heldout_set, 20261207),
    "unseen": (unseen_set, UNSEEN_SEED),
    "fifth": (fifth_set, FIFTH_SEED),
    "sixth": (sixth_set, SIXTH_SEED),
}


@dataclass
class SetScore:
    """Per Safe Harbor type: planted and removed; per placeholder: spans removed and those on a planted
    identifier."""

    planted: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    spans: Counter[str] = field(default_factory=Counter)
    true_spans: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)
    false_positives: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def recall(self, kind: str | None = None) -> float:
        planted = self.planted[kind] if kind else sum(self.planted.values())
        removed = self.removed[kind] if kind else sum(self.removed.values())
        return removed / planted if planted else float("nan")

    def precision(self, label: str | None = None) -> float:
        spans = self.spans[label] if label else sum(self.spans.values())
        hits = self.true_spans[label] if label else sum(self.true_spans.values())
        return hits / spans if spans else float("nan")


def score(finder: PHIFinder, notes: Sequence[LabelledNote]) -> SetScore:
    result = SetScore()
    started = time.perf_counter()
    for note in notes:
        found = finder.find(note.text)
        covered: set[int] = set()
        for span in found:
            covered.update(range(span.start, span.end))
            result.spans[span.kind.value] += 1
            if any(span.start < end and start < span.end for start, end, _ in note.planted):
                result.true_spans[span.kind.value] += 1
            else:
                context = note.text[max(0, span.start - 30) : span.end + 10].replace("\n", " ")
                result.false_positives.append((span.kind.value, note.text[span.start : span.end], context))
        for start, end, kind in note.planted:
            result.planted[kind] += 1
            if all(i in covered for i in range(start, end) if note.text[i].isalnum()):
                result.removed[kind] += 1
            else:
                context = note.text[max(0, start - 30) : end + 10].replace("\n", " ")
                result.misses.append((kind, note.text[start:end], context))
    result.seconds = time.perf_counter() - started
    return result
