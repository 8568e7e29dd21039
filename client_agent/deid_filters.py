"""Checks that drop what a recogniser found but is not PHI, and trim a span to the identifier.

spaCy's small model tags most unknown capitalised words (drug brands above all) as people, places or
organisations; a pattern keyed on a title or a cue also catches words that are not names ("my Dr. Told
me"). These functions are the analyser's precision step (:mod:`client_agent.deid_presidio`).
"""

from __future__ import annotations

import re

import regex
from drug_named_entity_recognition import find_drugs
from presidio_analyzer import RecognizerResult

from client_agent.deid_context import is_english
from client_agent.deid_patterns import FACILITY_HEAD, PARTICLE
from client_agent.deid_recognizers import NOT_NAMES
from client_agent.deid_rules import EPONYMS, looks_like_verb
from client_agent.deid_words import CLINICIAN, COMMON_PLACES, DEPARTMENT_WORDS, ROLE_NOUNS, SECTION_WORDS

# Words that end a name's run in a field ("ioana kim and ...", "amara abdi for ...").
_STOP = frozenset(
    {"a", "an", "and", "or", "the", "for", "with", "to", "of", "in", "on", "at", "by", "from", "is", "was"}
)

NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "SUBJECT_NAME"})


def eponym_surname(words: list[str], english_words: frozenset[str]) -> bool:
    """A surname that is also an eponym, before words that are neither English nor eponyms ("Baker Eleni",
    "Wilson, Amara"): a person, where "Baker cyst" or "Wilson disease" is not."""
    rest = [w.strip(",.") for w in words[1:] if len(w.strip(",.")) > 1]
    return (
        len(words) > 1
        and words[0].strip(",.").title() in EPONYMS
        and bool(rest)
        and not any(w in NOT_NAMES or w.title() in NOT_NAMES or is_english(w, english_words) for w in rest)
    )


def implausible(value: str, entity: str, english_words: frozenset[str] = frozenset()) -> bool:
    """An NER span that is a number, an abbreviation ("CT", "SSN"), a label, an eponym, a drug (by the
    ``drug-named-entity-recognition`` lexicon: spaCy's small model takes "Zoloft" for a person), or one
    word alone: the small model tags most unknown capitalised words (drug brands above all) as people,
    places or organisations, and a name or place with a cue is found by the patterns; a lone subject
    ("Sigrid slept well") by :class:`SubjectNameRecognizer`."""
    words = [w for w in re.split(r"[\s-]+", value.strip(" .,:;")) if w]
    if not words or any(c.isdigit() for c in value) or value.rstrip().endswith(":") or value.islower():
        return True
    if words[0][:1].islower() and words[0] != "the" and not _PARTICLE_WORD.fullmatch(words[0]):
        return True  # "mL. Specimen": a unit before a sentence, not "van Gogh"
    if entity == "PERSON" and english_words and eponym_surname(words, english_words):
        return bool(find_drugs(words, is_ignore_case=True))
    if (
        words[0] in NOT_NAMES
        or any(w in EPONYMS for w in words)
        or (len(words) == 1 and entity != "SUBJECT_NAME")
    ):
        return True
    if all((w.isupper() and len(w) <= 5) or w in NOT_NAMES for w in words):
        return True
    return bool(find_drugs(value.split(), is_ignore_case=True) or find_drugs(words, is_ignore_case=True))


def not_a_name(value: str, english_words: frozenset[str]) -> bool:
    """A word after a title that is a verb, a stop word or, in lower case, an English verb, adjective or
    adverb ("My Dr. Told me", "my Dr. Prescribed it", "the dr said"; WordNet's nouns hold surnames). A
    name ending in "-ed" that is no English verb ("Mildred") and an eponym before a given name ("Baker
    Eleni") are names."""
    words = value.split()
    first = words[0] if words else ""
    if eponym_surname(words, english_words):
        return False
    return (
        first in NOT_NAMES
        or (looks_like_verb(first) and is_english(first, english_words))
        or (first.islower() and first in english_words)
    )


def not_a_field_name(value: str) -> bool:
    """The value of a patient's name field, or a name in quotes, that is not a person's name: a label, a
    stop word, a section or department word or a drug ("Patient: Alert and Oriented", "prefers
    'Tylenol'"). English words otherwise stay names there ("Patient: April Fox")."""
    words = WORD_SPAN.findall(value)
    return any(
        ((w in NOT_NAMES or w.title() in NOT_NAMES) and not _CALENDAR.fullmatch(w))  # "April", "June"
        or w.lower() in _STOP
        or w.lower() in SECTION_WORDS
        or w.lower() in DEPARTMENT_WORDS
        for w in words
    ) or bool(find_drugs(words, is_ignore_case=True))


def not_a_place(
    value: str, english_words: frozenset[str], not_nouns: frozenset[str], *, place: bool = False
) -> bool:
    """What follows "admitted to" and is not a facility's name: a unit ("ICU"), a department ("Radiology"),
    a common place ("Home", "Work"), or in lower case one adjective, verb or stop word before the head
    noun ("a walk-in clinic", "the dental clinic"; a noun may be a name: "cleveland clinic", and one
    capitalised noun may be a hospital's: "works at Parkland"). With ``place`` (where a person is from)
    a capitalised word may be any English word but a month or a day ("from Flint", not "from March"), and
    a drug is no place ("switched from Zoloft")."""
    if place:
        words = WORD_SPAN.findall(value)
        return (
            bool(find_drugs(words, is_ignore_case=True))
            or department(value)
            or any(w in NOT_NAMES or w.lower() in COMMON_PLACES or _CALENDAR.fullmatch(w) for w in words)
        )
    words = [w for w in value.split() if w.lower() != "the"]
    if all((w.isupper() and len(w) <= 5) or w in NOT_NAMES for w in words) or department(value):
        return True
    if len(words) == 1 and (
        is_english(words[0], not_nouns)
        or words[0].lower() in COMMON_PLACES
        or (words[0].islower() and is_english(words[0], english_words))
    ):
        return True
    head = _FACILITY_HEAD.search(value)
    if value.islower() and head:
        before = [w for w in value[: head.start()].split() if w != "the"]
        if not before or (
            before[0] not in ("our", "st", "st.", "saint") and is_english(before[0], not_nouns)
        ):
            return True  # "my local pharmacy", "find a pharmacy"
        return len(before) == 1 and is_english(before[0], not_nouns)
    return False


def department(value: str) -> bool:
    """A name made only of department, specialty and service words ("CARDIOLOGY DEVICE CLINIC", "Home
    Health Skilled Nursing"): a service, not a facility that places a patient."""
    words = [w.lower() for w in WORD_SPAN.findall(value)]
    return bool(words) and all(w in DEPARTMENT_WORDS or w in _STOP for w in words)


def heading(value: str, english_words: frozenset[str]) -> bool:
    """A note's heading or a signer's role rather than a facility on its letterhead: written in capitals
    ("OPERATIVE REPORT"), or only English verbs, adjectives, adverbs, stop words, section-title and
    department words and clinicians' roles ("Chief Complaint", "History of Present Illness", "Radiology
    Report", "Consultant Neurologist")."""
    words = WORD_SPAN.findall(value)
    return value.isupper() or all(
        w.lower() in DEPARTMENT_WORDS
        or w.lower() in SECTION_WORDS
        or w in NOT_NAMES
        or is_english(w, english_words)
        or CLINICIAN.fullmatch(w.lower())
        for w in words
    )


def clinical_eponym(text: str, start: int, end: int) -> bool:
    """A capitalised word that names a score, a grade, a device or a sign, by what follows it ("Braden
    score 14", "Jackson-Pratt drain", "Gleason 3+4", "Mallampati II"), not a person or a place."""
    words = WORD_SPAN.findall(text, start, end)
    if len(words) == 2 and _ROMAN_GRADE.fullmatch(words[1]):
        return True
    return bool(_CLINICAL_AFTER.match(text, end))


def lone_place(text: str, start: int, end: int, entity: str, english_words: frozenset[str]) -> bool:
    """A one-word place that spaCy found after a locative preposition ("in Toledo", "from Lagos") and that
    is not an English word, an abbreviation, a label or a drug: :func:`implausible` drops one-word
    entities, and a town named alone is the commonest form of it."""
    value = text[start:end]
    return (
        entity == "LOCATION"
        and bool(_LOCATIVE.search(text, max(0, start - 16), start))
        and value[:1].isupper()
        and value.isalpha()
        and not (value.isupper() and len(value) <= 5)
        and value not in NOT_NAMES
        and not is_english(value, english_words)
        and not find_drugs([value], is_ignore_case=True)
    )


def product_code(text: str, start: int) -> bool:
    """An identifier after "model", "lot", "ref" or "catalog": it names a product or a batch, not a
    person (Safe Harbor's device identifiers are serial numbers)."""
    return bool(_PRODUCT_LABEL.search(text, max(0, start - 24), start))


def lower_case_name(
    text: str,
    start: int,
    end: int,
    *,
    from_end: bool,
    least: int,
    english_words: frozenset[str],
    field: bool = False,
) -> tuple[int, int] | None:
    """The run of words in ``text[start:end]`` that are not English words nor drugs, from its start (a
    name after a cue) or from its end (a name before a credential), with particles inside ("connor van
    der berg"); None when it has fewer than ``least`` words. With ``field`` (the value of a field such as
    "Patient:") two or three words whose first is a name are a name whole, English words after it too
    ("yael brown")."""
    words = list(_LOWER_WORD.finditer(text, start, end))
    if (
        field
        and 2 <= len(words) <= 3
        and not is_english(words[0].group(), english_words)
        and not find_drugs([w.group() for w in words], is_ignore_case=True)
        and not any(w.group() in _STOP for w in words)
    ):
        return words[0].start(), words[-1].end()
    if from_end:
        words.reverse()
    kept: list[regex.Match[str]] = []
    pending: list[regex.Match[str]] = []
    for word in words:
        if kept and _PARTICLE_WORD.fullmatch(word.group()):
            pending.append(word)
            continue
        irish = _IRISH.fullmatch(word.group())  # "o'sullivan", "d'souza": not the letter "o"
        if not irish and (
            is_english(word.group(), english_words)
            or CLINICIAN.fullmatch(word.group())
            or word.group() in ROLE_NOUNS
            or find_drugs([word.group()], is_ignore_case=True)
        ):
            break  # "social worker siobhan ...": a role, not a name
        kept += [*pending, word]
        pending = []
    if len([w for w in kept if not _PARTICLE_WORD.fullmatch(w.group())]) < least:
        return None
    first, last = (kept[-1], kept[0]) if from_end else (kept[0], kept[-1])
    return first.start(), last.end()


_LEADING_TITLE = re.compile(
    r"(?i:(?:dear|dr|mr|mrs|ms|mx|miss|prof|nurse|np|patient|pt|daughter|son|wife|husband|niece|nephew|mother|"
    r"father|sister|brother|caregiver|partner|spouse)\.?,?[ \t]+)+"
)


def from_recased_words(result: RecognizerResult, text: str, original: str) -> bool:
    """Whether a span of the case-normalised text owes itself to the new case: a pattern's span lies on a
    recased line; a named entity's words were all recased but for particles ("Fatima Zahra el Amrani",
    not "Distal Bicep" from "distal bicep"). A subject is never taken from it: every unknown word of a
    lower-case line is capitalised there, drug names included."""
    if result.entity_type == "SUBJECT_NAME":
        return False
    if result.entity_type not in NER_ENTITIES:
        line_start = text.rfind("\n", 0, result.start) + 1
        line_end = text.find("\n", result.end) % (len(text) + 1)
        return text[line_start:line_end] != original[line_start:line_end]
    words = list(WORD_SPAN.finditer(text, result.start, result.end))
    recased = [m.group() != original[m.start() : m.end()] for m in words]
    return any(recased) and all(
        r or _PARTICLE_WORD.fullmatch(m.group()) for m, r in zip(words, recased, strict=True)
    )


_FACILITY_HEAD = regex.compile(rf"(?i:\b(?:{FACILITY_HEAD}|rehab)\b)")
_ROMAN_GRADE = regex.compile(r"I{1,3}|IV")
_IRISH = regex.compile(r"(?i:o|d|mc|mac)['’]\p{L}{2,}")
_CALENDAR = regex.compile(
    r"(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|(?:mon|tues|wednes|thurs|fri|satur|sun)day)"
)
_CLINICAL_AFTER = regex.compile(
    r"[ \t]*(?i:score|scale|class|classification|grade|drain|catheter|tube|stage|criteria|sign|test|index|"
    r"maneuver|manoeuvre|stockings?|splint)\b|[ \t]+(?:I{1,3}|IV)\b|[ \t]+\d+[+/]\d"
)
# "to" and "at" are left out: "switched to Junel" (a drug brand spaCy takes for a place)
_LOCATIVE = regex.compile(r"\b(?i:in|from|near|outside|around|visiting)[ \t]+$")
_PRODUCT_LABEL = regex.compile(
    r"\b(?i:model|lot|ref|cat(?:alog)?|part)\.?[ \t]*(?:(?i:no|number)\.?|\#)?[ \t]*[:#]?[ \t]*$"
)
_LOWER_WORD = regex.compile(r"\p{Ll}[\p{Ll}'’-]+")
WORD_SPAN = regex.compile(r"\p{L}[\p{L}'’]*")
PARTICLE_WORD = _PARTICLE_WORD = regex.compile(PARTICLE)
# "NGOZI L" after "HADDAD,": one capital, not "A" or "I" before a lower-case word (an article, a pronoun)
MIDDLE_INITIAL = regex.compile(
    r"[ \t]+(?![AI][ \t]+(?!(?:at|on|in|of|to|for|and|or|with|by|from|is|was|as)\b)\p{Ll})\p{Lu}\.?(?![\p{L}\d'’-])"
)
NEXT_WORD = regex.compile(
    rf"(?:[ \t]+{PARTICLE})*[ \t]+(\p{{Lu}}\p{{Ll}}+(?:-\p{{Lu}}\p{{Ll}}+)?)\b(?![ \t]*:)"
)


def after_title(text: str, start: int, end: int) -> int:
    """Where a name starts once a title or relation it took in is left out ("Dr Patel", "Daughter Amara":
    the word before the name stays)."""
    match = _LEADING_TITLE.match(text, start, end)
    return match.end() if match else start


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """Without surrounding spaces and trailing punctuation (NER spans sometimes carry them)."""
    while start < end and text[start] in " \t\n":
        start += 1
    while end > start and text[end - 1] in " \t\n.,;:":
        end -= 1
    return start, end
