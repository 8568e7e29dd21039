"""De-identification of clinical text, run on a hospital's data before tokenisation.

A :class:`~client_agent.phi.PHIFinder` finds protected health information (PHI); :class:`Deidentifier`
replaces each span with a typed placeholder (``[NAME]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``, ``[URL]``,
``[IP]``, ``[DATE]``, ``[ADDRESS]``, ``[FACILITY]``, ``[AGE]``), or, when the hospital holds a key, with
a keyed tag such as ``[NAME:3f9a1c]``: the first hex digits of HMAC-SHA256(key, type and normalised
value), so the same person or number maps to the same tag across a hospital's notes without the value
being recoverable from the tag by anyone without the key.

Two finders: ``"presidio"`` (the default; Microsoft Presidio's analyzer with a spaCy NER model, its
pattern recognisers, ours where they add recall, :mod:`client_agent.deid_presidio`) and ``"rules"`` (our
regular expressions alone, :mod:`client_agent.deid_rules`). ``bench/deid_eval.py`` measures both on
synthetic notes; docs/deid.md has the table. Neither is a guarantee: see docs/data.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal

from client_agent.deid_rules import RuleFinder
from client_agent.phi import PHI, DeidError, PHIFinder, Span

DeidEngine = Literal["presidio", "rules"]
DEID_ENGINES: tuple[DeidEngine, ...] = ("presidio", "rules")

_MIN_KEY_BYTES = 16


def make_finder(engine: DeidEngine) -> PHIFinder:
    """The finder an engine name stands for (the agent's ``deid_engine`` setting, ``--deid-engine``)."""
    if engine == "presidio":
        # Imported here: spaCy, Presidio and the drug lexicon take seconds to import, and only the
        # commands that de-identify need them.
        from client_agent.deid_presidio import PresidioFinder

        return PresidioFinder()
    if engine == "rules":
        return RuleFinder()
    raise DeidError(f"`deid_engine` must be one of {', '.join(DEID_ENGINES)}, got {engine!r}")


def _normalise(kind: PHI, value: str) -> str:
    """The form a value is keyed by, so that spelling variants of one value share a tag."""
    if kind is PHI.PHONE:
        # The last nine digits: "+44 7700 900123" and "07700 900123" are one number (country codes
        # and trunk prefixes differ, the subscriber part does not).
        return re.sub(r"\D", "", value)[-9:]
    if kind is PHI.AGE:
        return re.sub(r"\D", "", value) or " ".join(value.casefold().split())
    if kind is PHI.ID:
        return re.sub(r"[^0-9A-Za-z]", "", value).upper()
    if kind in (PHI.NAME, PHI.ADDRESS, PHI.FACILITY):
        return " ".join(re.sub(r"[^\w\s]", " ", re.sub(r"['’]s\b", "", value)).casefold().split())
    return " ".join(value.casefold().split())


class Deidentifier:
    """Finds PHI with ``finder`` (Presidio-based by default) and replaces it with placeholders or tags.

    ``key`` (at least 16 bytes, held by the hospital and never sent) turns on keyed tags of
    ``tag_chars`` hex digits. Six digits keep tags short; the chance that two of ``n`` distinct values of
    one type share a tag is about ``n^2 / 2^25`` (about 3% for 1,000 names), which only merges two
    placeholders and never reveals a value.
    """

    def __init__(
        self, *, finder: PHIFinder | None = None, key: bytes | None = None, tag_chars: int = 6
    ) -> None:
        if key is not None and len(key) < _MIN_KEY_BYTES:
            raise DeidError(f"`key` must be at least {_MIN_KEY_BYTES} bytes, got {len(key)}")
        if not 4 <= tag_chars <= 64:
            raise DeidError(f"`tag_chars` must lie in 4..64, got {tag_chars}")
        self._key = key
        self._tag_chars = tag_chars
        self.finder = finder if finder is not None else make_finder("presidio")

    def find(self, text: str) -> list[Span]:
        """The PHI spans in ``text``, non-overlapping and in order (the finder's)."""
        return self.finder.find(text)

    def placeholder(self, kind: PHI, value: str) -> str:
        if self._key is None:
            return f"[{kind}]"
        message = f"{kind}\x00{_normalise(kind, value)}".encode()
        tag = hmac.new(self._key, message, hashlib.sha256).hexdigest()[: self._tag_chars]
        return f"[{kind}:{tag}]"

    def deidentify(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with its PHI replaced, and how many spans of each type were replaced."""
        counts: Counter[str] = Counter()
        pieces: list[str] = []
        position = 0
        for span in self.finder.find(text):
            pieces.append(text[position : span.start])
            pieces.append(self.placeholder(span.kind, text[span.start : span.end]))
            counts[span.kind.value] += 1
            position = span.end
        pieces.append(text[position:])
        return "".join(pieces), counts

    def deidentify_many(self, texts: Iterable[str]) -> tuple[list[str], Counter[str]]:
        """Every text de-identified, with the counts summed over all of them."""
        total: Counter[str] = Counter()
        out: list[str] = []
        for text in texts:
            clean, counts = self.deidentify(text)
            out.append(clean)
            total.update(counts)
        return out, total


def deidentify(text: str, *, key: bytes | None = None) -> tuple[str, Counter[str]]:
    """One-off :meth:`Deidentifier.deidentify` (build a :class:`Deidentifier` to reuse its model)."""
    return Deidentifier(key=key).deidentify(text)
