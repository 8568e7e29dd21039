"""The sixth synthetic note set: clinical documents with planted HIPAA Safe Harbor identifiers.

How and by whom it was written: by a helper session started with a fresh context for issue 24 (item 6),
which did not read the de-identifier (`client_agent/deid*.py`, `client_agent/phi.py`, `docs/deid.md`,
`docs/results/deid/`) nor the other note sets or their tests; it read only `tests/deid_sets.py` and
`bench/deid_eval.py`, to hook the set in. The documents, formats and name pools come from its own
knowledge of how US hospital records are written. The set was committed before any finder was run on it,
and was not changed after its first score.

Seed: `SIXTH_SEED` (below). The genres of `GENRES` (`tests/deid_sixth_genres.py`) come round in
turn, each round in a shuffled order, so that every genre is about equally common: discharge summary, ED triage, nursing flowsheet, radiology, pathology,
pharmacy consult, patient portal message (typed by the patient, lower case), telephone encounter,
referral letter, procedure consent, social work assessment, home health visit, critical lab call-back,
insurance prior authorisation, death certificate worksheet, device clinic interrogation, trauma H&P,
EHR access audit, release of information, POLST / goals of care, billing statement, operative report
a care coordination e-mail, a registration face sheet, a telehealth video visit and a unit census (surname-first list).

What is planted, as exact `(start, end, type)` spans under the vocabulary of `tests/deid_sets.py`:
names of patients, relatives and clinicians (eighteen origins, diacritics, particles, hyphens,
initials, nicknames, ALL CAPS, surname first, lower case), facilities, street addresses (units,
directions, rural routes, county roads), PO boxes, cities, ZIP codes, dates of any kind except a bare
year (partial dates included), ages over 89 (the number only), phones, faxes, e-mails, SSNs (whole, or
the last four digits of a masked one), MRNs, accounts, health plan IDs, licences, device serials,
plates and VINs, URLs and IP addresses. A title or credential ("Dr.", "RN") is not part of a planted
name. Left unplanted, so that over-redaction shows: states, bare years, ages under 90, doses, vital
signs, lab values, pain scores, vertebral levels, rooms and beds, billing and drug codes, clinical
scores, eponymous diseases and signs, phone extensions and times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.deid_sixth_context import NoteContext
from tests.deid_sixth_formats import Span
from tests.deid_sixth_genres import GENRES

SIXTH_SEED = 60_612_071
DEFAULT_COUNT = 276


@dataclass(frozen=True)
class SixthNote:
    text: str
    spans: tuple[Span, ...]
    genre: str
    origins: frozenset[str]  # the cultural origins of the names drawn for this note


def sixth_notes(n: int = DEFAULT_COUNT, seed: int = SIXTH_SEED) -> list[SixthNote]:
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < n:
        round_ = sorted(GENRES)
        rng.shuffle(round_)
        order += round_
    notes = []
    for genre in order[:n]:
        context = NoteContext(rng)
        frag = GENRES[genre](context)
        notes.append(SixthNote(frag.text, frag.spans, genre, frozenset(context.origins)))
    return notes
