"""Our Presidio recognisers that are not patterns, and the English word lists they and the filters use.

:class:`RuleRecognizer` runs our rules (:class:`client_agent.deid_rules.RuleFinder`) as one recogniser;
:class:`SubjectNameRecognizer` reads spaCy's parse for a proper noun that is the subject of a verb. The
word lists come from the spaCy model's lemmatizer tables (WordNet's lemmas, irregular forms, stop words).
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.language import Language
from spacy.pipeline import Lemmatizer
from spacy.tokens import Token

from client_agent.deid_rules import EPONYMS, STOP_WORDS, RuleFinder
from client_agent.phi import PHI

# Capitalised words spaCy's small model takes for people or organisations in clinical text.
# Public health-plan programmes are named like organisations and are not identifiers.
NOT_NAMES = (
    STOP_WORDS
    | EPONYMS
    | frozenset({"Foley", "Medicaid", "Medicare", "Email", "Started", "Note"})
    | frozenset({"Medi", "Medi-Cal", "MassHealth", "Tricare", "TRICARE", "TennCare", "CHIP"})
)


def wordnet_words(nlp: Language, parts: tuple[str, ...] = ("noun", "verb", "adj", "adv")) -> frozenset[str]:
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


def inflected_words(nlp: Language) -> frozenset[str]:
    """Irregular forms from spaCy's lemmatizer ("came", "told") and its stop words."""
    words: set[str] = set(nlp.Defaults.stop_words)
    lemmatizer = nlp.get_pipe("lemmatizer") if "lemmatizer" in nlp.pipe_names else None
    if isinstance(lemmatizer, Lemmatizer) and lemmatizer.lookups.has_table("lemma_exc"):
        table = lemmatizer.lookups.get_table("lemma_exc")
        for pos in ("noun", "verb", "adj", "adv"):
            if pos in table:
                words.update(table[pos])
    return frozenset(words)


class SubjectNameRecognizer(EntityRecognizer):
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
            and token.text not in NOT_NAMES
            and token.lower_ not in self._english
            # "Prescriber: A. Rao": a field's label, which the parser may take for a subject
            and not (token.i + 1 < len(token.doc) and token.nbor(1).text == ":")
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


class RuleRecognizer(EntityRecognizer):
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
