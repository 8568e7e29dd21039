"""What a de-identifier finds: the PHI types, a found span, and the seam every finder implements."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum


class PHI(StrEnum):
    """The placeholder types; a value's Safe Harbor identifier (45 CFR 164.514(b)(2)) maps onto one."""

    NAME = "NAME"
    ID = "ID"  # SSNs, medical record, account, plan and licence numbers
    PHONE = "PHONE"  # telephone and fax numbers
    EMAIL = "EMAIL"
    URL = "URL"
    IP = "IP"
    DATE = "DATE"
    ADDRESS = "ADDRESS"  # street addresses, PO boxes, cities, ZIP codes
    FACILITY = "FACILITY"  # hospitals, clinics, nursing homes: they place a patient as an address does
    AGE = "AGE"  # over 89 only


class DeidError(ValueError):
    """A de-identifier was configured with something unusable (a short key, a model that is not there)."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: PHI
    priority: int


PLACEHOLDER = re.compile(rf"\[(?:{'|'.join(PHI)})(?::[0-9a-f]{{4,64}})?\]")


class PHIFinder(ABC):
    """Finds the PHI spans of a text; :class:`client_agent.deid.Deidentifier` replaces them."""

    @abstractmethod
    def candidates(self, text: str) -> list[Span]:
        """Every span some rule or model flags, overlaps allowed."""

    def find(self, text: str) -> list[Span]:
        """The PHI spans in ``text``, non-overlapping and in order.

        Where candidates overlap, the higher priority wins, then the longer span. Placeholders already in
        the text are left alone, so running twice changes nothing.
        """
        ranked = sorted(self.candidates(text), key=lambda s: (-s.priority, s.start - s.end, s.start))
        taken = [m.span() for m in PLACEHOLDER.finditer(text)]
        chosen: list[Span] = []
        for cand in ranked:
            if cand.end > cand.start and all(cand.end <= start or cand.start >= end for start, end in taken):
                chosen.append(cand)
                taken.append((cand.start, cand.end))
        return sorted(chosen, key=lambda s: s.start)


def union_of_overlaps(candidates: list[Span], text: str) -> list[Span]:
    """Overlapping candidates merged into their union, typed by the highest-priority one, in order.

    A partial overlap must not leave half an identifier behind, so the union is removed rather than the
    winner alone. Placeholders already in ``text`` are left alone.
    """
    taken = [m.span() for m in PLACEHOLDER.finditer(text)]
    merged: list[Span] = []
    for span in sorted(candidates, key=lambda s: (s.start, -s.end)):
        if any(span.start < end and span.end > start for start, end in taken):
            continue
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            top = last if last.priority >= span.priority else span
            merged[-1] = Span(last.start, max(last.end, span.end), top.kind, top.priority)
        else:
            merged.append(span)
    return merged
