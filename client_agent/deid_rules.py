"""Our own rules for finding PHI: regular expressions with a few checks, the first de-identifier.

:class:`RuleFinder` is kept beside the library-based finder (:mod:`client_agent.deid_presidio`), which runs
it as one of its recognisers where it adds recall, and as the baseline ``bench/deid_eval.py`` measures.

What is kept: a title or field label stays and only the value goes ("Dr. [NAME]", "MRN: [ID]"); doses,
lab values, blood pressures, ages under 90, durations, years on their own, eponymous diseases
("Parkinson's disease", "Crohn's", "Hodgkin lymphoma") and drug brand names.

What it does NOT catch (see docs/deid.md for the measured recall): names with no cue (no title, no field
label, no salutation or sign-off, no relationship word, not in the list of common given names), names
written in lower case or all capitals outside a ``Name:`` field, cities, hospitals and ward names, bare
month names ("in March"), dates written only in words, identifiers without a label and without a
recognisable shape. Some over-redaction is accepted: a common given name followed by a drug name
(“Emma Tylenol”) loses both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from client_agent.phi import PHI, PHIFinder, Span


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- vocabulary -----------------------------------------------------------------------------------------
_TITLES = r"(?:Dr|Doctor|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Nurse|Sister|Rev|Patient|Pt)"
_PARTICLE = r"(?:van|von|de|der|den|da|di|du|del|della|la|le|ten|ter|bin|ibn|al)"
# Latin-1 and Latin Extended-A letters too ("Müller", "João", "Zielińska"); the extended block mixes
# capitals and small letters, so it is in both.
_UP, _LOW = "A-ZÀ-ÖØ-Þ\u0100-\u017f", "a-zß-öø-ÿ\u0100-\u017f"
_TOKEN = rf"(?:Mc|Mac|O['’]|D['’])?[{_UP}][{_LOW}]+(?:-(?:Mc|Mac|O['’])?[{_UP}][{_LOW}]+)?"
_INITIALS = rf"(?:[{_UP}]\.[ \t]?|[{_UP}][ \t]){{0,3}}"
# One to three name tokens on one line, optional initials and lower-case particles ("van der Berg").
_SURNAME = rf"(?:{_PARTICLE}[ \t]+){{0,3}}{_TOKEN}"
_NAME = rf"{_INITIALS}{_SURNAME}(?:[ \t]+(?:[A-Z]\.[ \t]*)?{_SURNAME}){{0,2}}"
_TITLE_SEP = r"(?:\.[ \t]*|[ \t]+)"

# Capitalised words that follow titles and labels but are not names; a candidate stops before them.
STOP_WORDS = _words(
    """
    A An And Or Of In On At To For With By From As The This That These Those He She They His Her Hers It
    Its I We You Your Our My Me Him Them Is Was Were Are Be Been Has Had Have Will Would Can Could Should
    Shall May Might Must Do Did Does Not No Yes None Today Yesterday Tomorrow Monday Tuesday Wednesday
    Thursday Friday Saturday Sunday January February March April June July August September October
    November December Hospital Clinic Centre Center Health Medical Medicine Practice Surgery Department
    Ward Unit Office Team Service Services Trust University School College Foundation NHS MRN DOB ID
    Re Ref Date Tel Phone Fax Email Address Female Male Unknown Name Names Patient Patients Pt Dear Sir
    Madam Colleague Colleagues Doctor Doctors Information Education History Note Notes Summary Discharge
    Admission Referral Letter Report Reports Reported States Says Said Presents Presented Denies
    Complains Age Sex Gender Type Stage Grade Group Status Plan Diagnosis Assessment Impression
    Medications Medication Allergies Follow Signed Thanks Thank Please Regards Sincerely All Family
    Parent Parents Friend Friends Practitioner Consultant Registrar Resident Physician Specialist
    Told Said Gave Put Took Thinks Thought Kept Let Made Sent Wrote Saw Wants Says Asks Gives Feels
    Dr Mr Mrs Ms Miss Mx Prof Professor Nurse Sister Rev
    """
)
# Eponyms of diseases, signs and scores: never names when they appear without a title.
EPONYMS = _words(
    """
    Parkinson Alzheimer Crohn Hodgkin Huntington Addison Cushing Graves Hashimoto Raynaud Sjogren
    Sjögren Tourette Asperger Down Bell Guillain Barre Barré Kawasaki Meniere Ménière Paget Wilson
    Wernicke Korsakoff Marfan Ehlers Danlos Reiter Behcet Behçet Lyme Kaposi Burkitt Barrett Dupuytren
    Osgood Schlatter Legionnaires Tay Sachs Turner Klinefelter Peyronie Stevens Johnson Hirschsprung
    Duchenne Becker Fabry Gaucher Pompe Niemann Pick Creutzfeldt Jakob Still Bright Conn Whipple
    Zollinger Ellison Charcot Marie Tooth Gehrig Munchausen Tietze Baker Colles Bartholin Osler Weber
    Rendu Willebrand Apgar Glasgow Epstein Barr Gram Heimlich Babinski Kernig Murphy McBurney Homan
    Trendelenburg Valsalva Cheyne Stokes Wolff Bowen Brown Sequard Horner Argyll Robertson Budd Chiari
    Dandy Walker Arnold Angelman Prader Willi Rett Noonan Edwards Patau Fanconi Diamond Blackfan Ewing
    Wilms Hurthle Merkel Schwann Warthin Grave Alport Bartter Gilbert Crigler Najjar Dubin Mallory
    Weiss Boerhaave Zenker Meckel Hirschprung Sheehan Simmonds Nelson Waterhouse Friderichsen Kussmaul
    """
)
_DISEASE_NOUN = (
    r"(?:disease|syndrome|palsy|lymphoma|sarcoma|disorder|phenomenon|cyst|tumou?r|reflex|man(?:eu|oeu)vre|"
    r"maneuver|criteria|wort|anomaly|contracture|triad|o?esophagus|encephalopathy|dystrophy|chorea|"
    r"thyroiditis|ataxia)"
)
# After a candidate: an optional possessive, hyphen-joined eponyms ("-Marie-Tooth"), then the noun.
_DISEASE_AFTER = re.compile(rf"(?:['’]s?)?(?:-[A-Z][\w'’]*)*[ \t-]+{_DISEASE_NOUN}\b", re.I)
# Common given names whose spelling is neither an English word nor (as far as we know) a drug brand;
# "Charlotte", "Camila", "Heather", "Skyla", "Portia", "Ella", "Yasmin" and the like are brands.
GIVEN_NAMES = _words(
    """
    James John Robert Michael David Richard Joseph Thomas Charles Christopher Daniel Matthew Anthony Donald
    Steven Stephen Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward Jason Jeffrey Ryan
    Jacob Gary Nicholas Eric Jonathan Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Patrick
    Raymond Dennis Jerry Tyler Aaron Jose Adam Nathan Henry Douglas Zachary Peter Kyle Noah Ethan Jeremy
    Walter Keith Roger Terry Sean Gerald Carl Harold Dylan Arthur Lawrence Jesse Bryan Bruce Gabriel Alan
    Juan Albert Elijah Wayne Randy Vincent Roy Ralph Bobby Russell Bradley Philip Eugene Liam Oliver Harry
    Mohammed Muhammad Ahmed Hassan Ibrahim Rahul Amit Sanjay Carlos Luis Miguel Pedro Javier Francesco
    Giuseppe Klaus Pierre Lars Sven Ivan Dmitri Chris Mike Dave Tom Jim Bob Steve Tim Dan Matt Nick Ben Sam
    Joe Tony Jeff Greg Ken Andy Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen
    Lisa Nancy Betty Margaret Sandra Ashley Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa
    Deborah Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Angela Shirley Anna Brenda Pamela Nicole
    Samantha Katherine Christine Debra Rachel Carolyn Janet Catherine Maria Diane Joyce Kelly Christina
    Lauren Joan Evelyn Olivia Judith Megan Cheryl Martha Andrea Frances Hannah Jacqueline Gloria Teresa
    Kathryn Sara Janice Alice Abigail Julia Judy Denise Marilyn Danielle Theresa Sophia Diana Natalie
    Isabella Kayla Lori Emma Ava Chloe Zoe Sophie Lucy Ellie Jane Helen Ruth Anne Ann Jenny Kate Katie Beth
    Sally Molly Fatima Aisha Priya Mei Yuki Sofia Lucia Ingrid Susanne Agnes Edith Gladys Mildred Doris
    """
)


# Names that end like a past participle; any other capitalised "-ed" word after a title is taken for a
# verb, as in patient reviews' "my Dr. Prescribed ...".
_ED_NAMES = _words("Mohammed Muhammed Mohamed Ahmed Rasheed Waleed Khaled Saeed Hamed Javed Zayed Sayed")


def looks_like_verb(word: str) -> bool:
    return len(word) >= 6 and word.endswith("ed") and word not in _ED_NAMES


_INITIAL = re.compile(r"[A-Z]\.")  # "A." is an initial even though "A" is a stop word


def _name_tokens(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(m.start() + start, m.end() + start) for m in re.finditer(r"[^\s,]+", text[start:end])]


def _trim_name(text: str, start: int, end: int, *, leading: str, eponyms: bool) -> tuple[int, int] | None:
    """Cut a name candidate before its first stop word; None when nothing name-like is left.

    ``leading="drop"`` skips stop words at the front (for cues that come after the name, like ", MD");
    ``"reject"`` refuses the candidate instead. With ``eponyms`` a candidate ending in the possessive of
    a disease eponym ("Crohn's") is refused. A candidate followed by a disease noun ("Hodgkin lymphoma",
    "Wilson disease", "St John's wort") is always refused.
    """
    tokens = _name_tokens(text, start, end)
    while leading == "drop" and tokens and text[slice(*tokens[0])].rstrip(".") in STOP_WORDS:
        tokens.pop(0)
    kept: list[tuple[int, int]] = []
    for s, e in tokens:
        word = text[s:e]
        if word.rstrip(".") in STOP_WORDS and not _INITIAL.fullmatch(word):
            break
        kept.append((s, e))
        if e < len(text) and text[e] == ":":  # the next field's label, not a name ("John DOB: ...")
            kept.pop()
            break
    words = [text[s:e] for s, e in kept]
    if not words or all(len(w.rstrip(".")) == 1 for w in words) or looks_like_verb(words[0]):
        return None
    new_start, new_end = kept[0][0], kept[-1][1]
    if eponyms and words[-1] in EPONYMS and text[new_end : new_end + 1] in ("'", "’"):
        return None  # "Crohn's", "Parkinson's": an eponymous disease, not a person
    if _DISEASE_AFTER.match(text, new_end):
        return None
    return new_start, new_end


# --- rules ----------------------------------------------------------------------------------------------
Post = Callable[[re.Match[str], str], tuple[int, int] | None]


@dataclass(frozen=True)
class _Rule:
    kind: PHI
    priority: int
    pattern: re.Pattern[str]
    post: Post | None = None


def _group(match: re.Match[str], _text: str) -> tuple[int, int] | None:
    return match.span("phi") if "phi" in match.re.groupindex else match.span()


def _name_post(*, leading: str = "reject", eponyms: bool = True) -> Post:
    def post(match: re.Match[str], text: str) -> tuple[int, int] | None:
        return _trim_name(text, *match.span("phi"), leading=leading, eponyms=eponyms)

    return post


def _given_name_post(match: re.Match[str], text: str) -> tuple[int, int] | None:
    start, _ = match.span("phi")
    before = text[max(0, start - 7) : start]
    if re.search(r"(?:\bSt\.?|\bSaint|-)[ \t]*$", before) or text.startswith("-", match.end("phi")):
        return None  # "St. John's wort", "St Mary's", "Charcot-Marie-Tooth"
    return _trim_name(text, *match.span("phi"), leading="reject", eponyms=True)


def _digits(lo: int, hi: int) -> Post:
    """Keep the match only when its value holds ``lo`` to ``hi`` digits."""

    def post(match: re.Match[str], _text: str) -> tuple[int, int] | None:
        group = "phi" if "phi" in match.re.groupindex else 0
        n = sum(c.isdigit() for c in match.group(group))
        return match.span(group) if lo <= n <= hi else None

    return post


def _nhs_checksum(match: re.Match[str], _text: str) -> tuple[int, int] | None:
    # NHS number: modulus 11 with weights 10..2 over the first nine digits (NHS Data Dictionary).
    digits = [int(c) for c in match.group() if c.isdigit()]
    check = 11 - sum(d * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True)) % 11
    check = 0 if check == 11 else check
    return match.span() if check != 10 and check == digits[9] else None


def _url_post(match: re.Match[str], _text: str) -> tuple[int, int] | None:
    start, end = match.span()
    while end > start and match.string[end - 1] in ".,;:!?":
        end -= 1
    return start, end


# An abbreviation's full stop belongs to the date only before a number ("Nov. 2010", "Sept. 11"), so a
# sentence ending in "on 2 Jan." keeps its full stop.
_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
    r"(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)(?:\.(?=[ \t]+\d))?)"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"
_DATE = (
    rf"(?:{_DAY}(?:[ \t]+of)?[ \t]+{_MONTH}(?:,?[ \t]+{_YEAR})?|{_MONTH}[ \t]+{_DAY}(?:,?[ \t]+{_YEAR})?"
    rf"|{_MONTH},?[ \t]+{_YEAR}"
    r"|(?:0?[1-9]|[12]\d|3[01])(?P<sep>[/.-])(?:0?[1-9]|[12]\d|3[01])(?P=sep)(?:19|20)?\d{2}"
    r"|(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])|(?:0?[1-9]|1[0-2])/(?:19|20)\d{2})"
)
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
_POSTCODE = r"[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?[ ]?\d[ABD-HJLNP-UW-Z]{2}"
# Without a label or a street before it, a postcode must have its space ("S1M0NE" is a film title).
_POSTCODE_SPACED = _POSTCODE.replace("[ ]?", "[ ]")
_STREET_SUFFIX = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way|Close|Crescent|"
    r"Terrace|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Gardens|Grove|Row|Mews|Hill|Walk)\b\.?"
)
_REGION = (
    rf"(?:,[ \t]*(?:[A-Z][a-z]+[ \t]?){{1,3}},?[ \t]*(?:(?:{_STATES})[ \t]+\d{{5}}(?:-\d{{4}})?|{_POSTCODE}))"
)
_ID_LABEL = (
    r"(?i:MRN|MR[ \t]?(?:no|number|\#)|medical[ \t]+record(?:[ \t]+(?:number|no\.?))?|"
    r"(?:hospital|health|case|unit|patient|member|subscriber|insurance|policy|group|account|acct|accession|"
    r"claim|chart|encounter|visit|admission|medicare|medicaid|passport|licen[cs]e|employee|"
    r"national[ \t]+insurance|"
    r"social[ \t]+security)[ \t]+(?:id|identifier|number|no\.?|\#)|record(?:[ \t]+(?:number|no\.?))?|"
    r"N(?:HS|I)(?:[ \t]+(?:number|no\.?))?|CHI(?:[ \t]+(?:number|no\.?))?|SSN|NINO|ID)"
)
_RELATION = (
    r"(?i:husband|wife|son|daughter|mother|father|mum|mom|dad|brother|sister|partner|spouse|fianc[eé]e?|"
    r"boyfriend|girlfriend|grandson|granddaughter|grandmother|grandfather|grandma|grandpa|aunt|uncle|"
    r"niece|nephew|carer|caregiver|friend|neighbou?r)"
)
_NAME_FIELD = (
    r"(?i:patient(?:['’]s)?[ \t]+name|full[ \t]+name|name|patient|pt|next[ \t]+of[ \t]+kin|nok|"
    r"(?:emergency[ \t]+)?contact(?:[ \t]+person)?|gp|consultant|attending(?:[ \t]+physician)?|physician|"
    r"surgeon|referring[ \t]+(?:physician|doctor|clinician)|(?:referred|seen|reviewed|dictated|signed|"
    r"authori[sz]ed|verified|transcribed|electronically[ \t]+signed)(?:[ \t]+by)?|cc|author|clinician|"
    r"guardian)"
)
_FIELD_VALUE = (
    r"(?:[A-Z]{2,}(?:[ \t]+[A-Z]{2,})*,[ \t]*[A-Z][A-Za-z'’-]+(?:[ \t]+[A-Z][A-Za-z'’-]+)?|" + _NAME + ")"
)
_SIGN_OFF = (
    r"(?i:yours[ \t]+(?:sincerely|faithfully|truly)|(?:kind|best|warm|with[ \t]+kind)[ \t]+regards|regards|"
    r"sincerely|(?:with[ \t]+)?best[ \t]+wishes|many[ \t]+thanks)"
)


_LABEL_SEP = r"[ \t]*(?:[:#=]|\bis\b)?[ \t]*\#?[ \t]*"
# "943 476 5919" continues, "3 days" does not; a National Insurance number has spaced pairs.
_ID_VALUE = r"[A-Z]{2}[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D]\b|[A-Za-z0-9][A-Za-z0-9/-]*(?:[ ]\d{3,4}\b){0,3}"
_DOB_LABEL = r"(?i:DOB|D\.O\.B\.?|date[ \t]+of[ \t]+birth|born(?:[ \t]+on)?|birth[ \t]?date)"
_PHONE_LABEL = (
    r"(?i:tel(?:ephone)?|phone|mob(?:ile)?|cell|fax|pager|bleep|ext(?:ension)?|contact[ \t]+(?:no|number))"
    r"\b\.?[ \t]*(?:(?i:no|number)\.?[ \t]*)?[:#]?[ \t]*"
)
_ADDRESS_LABEL = r"(?i:(?:home[ \t]+)?address|addr|residence)[ \t]*:[ \t]*"
# An address field runs to the end of the line, a wide gap, a separator or the next "Label:".
_FIELD_END = r"(?=[ \t]{2,}|[ \t]*(?:[\n;|]|$)|[ \t]+[A-Za-z][A-Za-z .]{0,20}:)"
_ZIP_LABEL = r"(?i:zip(?:[ \t]*code)?|post[ \t]*code|postal[ \t]+code)[ \t]*[:#]?[ \t]*"
_ZIP = r"\d{5}(?:-\d{4})?"
_STREET = (
    r"(?:(?:Flat|Apt\.?|Apartment|Unit|Suite)[ \t]*\w+,?[ \t]+)?\d{1,5}[A-Za-z]?,?[ \t]+"
    rf"(?:[A-Z][a-z]+\.?[ \t]+){{1,3}}{_STREET_SUFFIX}(?:,?[ \t]+(?:Apt\.?|Suite|Unit|Flat|\#)[ \t]*\w+)?"
)
_INTL_PHONE = r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\w)"
_US_PHONE = r"(?<![\w/])(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w/])"
_NATIONAL_PHONE = r"(?<![\w/.,])0\d{1,4}(?:[ .-]?\d{2,4}){2,4}(?![\w/]|[.,]\d)"  # 020 7946 0958
_UNITS_AFTER = r"[ \t]*(?i:units?|iu|copies|cells|mg|mcg|ml)\b"  # "2400000 units" is a dose
_LONG_NUMBER = rf"(?<![\w/-])(?<!\d[.,])\d{{7,}}(?![\w/-]|[.,]\d|{_UNITS_AFTER})"
_NINO = r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D]\b"
_TITLED = rf"(?:{_TITLES}{_TITLE_SEP})"
_CREDENTIAL = (
    r"(?:MD|M\.D\.|RN|NP|PA-C|PhD|MBBS|MBChB|MRCP|MRCGP|FRCP|FRCS|FRCPC|FACP|DPM|PharmD|RPh|LPN|CNM|DNP|"
    r"BSN|MSN|APRN)\b"
)
_AGE_OVER_89 = (
    r"\b(?P<phi>9\d|1[01]\d)(?=[- ](?:years?|yrs?|y)[- ]old\b|[- ]?(?:yo|y/o)\b)"
    r"|\b(?i:aged?)[ \t]*:?[ \t]*(?P<phi2>9\d|1[01]\d)\b"
)


def _age_post(match: re.Match[str], _text: str) -> tuple[int, int] | None:
    # HIPAA Safe Harbor keeps ages but folds those over 89 into one category.
    return match.span("phi") if match.group("phi") else match.span("phi2")


def _rules(given_names: bool) -> list[_Rule]:
    """Every rule; where two overlap, the higher priority wins (see :meth:`Deidentifier.find`)."""

    def rule(kind: PHI, priority: int, pattern: str, post: Post | None = None) -> _Rule:
        return _Rule(kind, priority, re.compile(pattern), post)

    rules = [
        rule(PHI.EMAIL, 100, r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b"),
        rule(PHI.URL, 95, r"\b(?:https?://|www\.)[^\s<>\"')\]]+", _url_post),
        # Labelled values first: the label says what the value is.
        rule(PHI.ID, 90, rf"\b{_ID_LABEL}{_LABEL_SEP}(?P<phi>{_ID_VALUE})", _digits(3, 30)),
        rule(PHI.DATE, 85, rf"\b{_DOB_LABEL}[ \t]*[:\-]?[ \t]*(?P<phi>{_DATE}|{_YEAR})\b"),
        rule(PHI.PHONE, 85, rf"\b{_PHONE_LABEL}(?P<phi>\+?\(?\d[\d \t().-]{{2,}}\d)", _digits(4, 15)),
        rule(PHI.ADDRESS, 75, rf"\b{_ADDRESS_LABEL}(?P<phi>[^\n;|]+?){_FIELD_END}"),
        rule(PHI.ADDRESS, 75, rf"\b{_ZIP_LABEL}(?P<phi>{_ZIP}|{_POSTCODE}|\d{{4,6}})\b"),
        # Then values recognisable by their shape.
        rule(PHI.ID, 80, r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"),  # SSN
        rule(PHI.ID, 80, r"(?<![\w-])\d{3}[ -]\d{3}[ -]\d{4}(?![\w-])", _nhs_checksum),
        rule(PHI.ADDRESS, 70, rf"\b{_STREET}{_REGION}?"),
        rule(PHI.ADDRESS, 70, rf"\b(?:[A-Z][a-z]+[ \t]){{0,2}}[A-Z][a-z]+,[ \t]*(?:{_STATES})[ \t]+{_ZIP}\b"),
        rule(PHI.DATE, 60, rf"(?<![\w/.-]){_DATE}(?![\w/]|[.-]\d)"),
        rule(PHI.PHONE, 55, _INTL_PHONE, _digits(8, 15)),
        rule(PHI.PHONE, 50, _US_PHONE),
        rule(PHI.PHONE, 50, _NATIONAL_PHONE, _digits(10, 11)),
        rule(PHI.ADDRESS, 45, rf"\b(?:{_STATES})[ \t]+{_ZIP}\b|\b{_POSTCODE_SPACED}\b"),
        rule(PHI.ID, 40, _LONG_NUMBER),
        rule(PHI.ID, 40, r"(?<!\w)\#[ ]?(?P<phi>\d{4,})\b"),
        rule(PHI.ID, 40, r"\b[A-Z]{1,3}-?\d{5,}[A-Z]?\b"),
        rule(PHI.ID, 40, _NINO),
        # Names, by the cue that announces them.
        rule(PHI.NAME, 35, rf"\b{_TITLED}(?P<phi>{_NAME})", _name_post(eponyms=False)),
        rule(
            PHI.NAME,
            34,
            rf"\b{_NAME_FIELD}[ \t]*:[ \t]*{_TITLED}?(?P<phi>{_FIELD_VALUE})",
            _name_post(eponyms=False),
        ),
        rule(
            PHI.NAME,
            33,
            rf"\b{_SIGN_OFF}[ \t]*,?[ \t]*(?:\r?\n[ \t]*){{0,3}}{_TITLED}?(?P<phi>{_NAME})",
            _name_post(),
        ),
        rule(PHI.NAME, 33, rf"\bDear[ \t]+{_TITLED}?(?P<phi>{_NAME})", _name_post()),
        # "Triage RN: ..." is a label, not a name before a credential
        rule(PHI.NAME, 32, rf"(?P<phi>{_NAME}),?[ \t]+{_CREDENTIAL}(?![ \t]*:)", _name_post(leading="drop")),
        rule(PHI.NAME, 31, rf"\b{_RELATION}\b,?[ \t]+(?P<phi>{_TOKEN}(?:[ \t]+{_TOKEN})?)", _name_post()),
        rule(PHI.AGE, 20, _AGE_OVER_89, _age_post),
    ]
    if given_names:
        alternation = "|".join(sorted(GIVEN_NAMES, key=lambda n: (-len(n), n)))
        pattern = rf"\b(?P<phi>(?:{alternation})(?:[ \t]+(?:[A-Z]\.[ \t]*)?{_TOKEN})?)\b"
        rules.append(rule(PHI.NAME, 30, pattern, _given_name_post))
    return rules


class RuleFinder(PHIFinder):
    """Finds PHI with the rules above. ``given_names=False`` turns off the given-name list, the rule most
    likely to over-redact."""

    def __init__(self, *, given_names: bool = True) -> None:
        self._rules = _rules(given_names)

    def candidates(self, text: str) -> list[Span]:
        """Every rule's matches; labelled values outrank shapes, e-mail and URLs rank first."""
        found: list[Span] = []
        for rule in self._rules:
            for match in rule.pattern.finditer(text):
                span = (rule.post or _group)(match, text)
                if span is not None and span[1] > span[0]:
                    found.append(Span(span[0], span[1], rule.kind, rule.priority))
        return found
