"""Presidio recognisers for identifiers that only their context or their case gives away.

A bare "483-5890", "95764-216" or "9/21" is a phone number, a record number or a date only beside a word
that says so ("call", "chart", "discharged"): each is a Presidio ``PatternRecognizer`` whose score stays
under the finder's threshold unless Presidio's context enhancer finds one of its context words before it.
A note written in capitals ("TRANSFER FROM MERCY VALLEY MEDICAL CENTER") or in lower case ("bed 12 is juan
pablo") hides names from spaCy's NER and from patterns that key on a capital: :func:`case_normalised`
writes such lines in title case, offsets unchanged, for a second pass of the analyzer.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer

# Under the default threshold (0.3) alone; Presidio adds 0.35 when a context word comes before the value.
_CONTEXT_ONLY = 0.1

_STATE_NAMES = (
    r"Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|"
    r"Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|"
    r"Mississippi|Missouri|Montana|Nebraska|Nevada|New[ \t]+Hampshire|New[ \t]+Jersey|New[ \t]+Mexico|"
    r"New[ \t]+York|North[ \t]+Carolina|North[ \t]+Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode[ \t]+Island|"
    r"South[ \t]+Carolina|South[ \t]+Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|"
    r"West[ \t]+Virginia|Wisconsin|Wyoming"
)
_STATE_CODES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
# A month in capitals ("MAR 08 2023", "14TH OF JANUARY"), whole or cut to three or four letters.
_MONTH_CAPS = (
    "JANUARY|FEBRUARY|MARCH|APRIL|MAY|JUNE|JULY|AUGUST|SEPTEMBER|OCTOBER|NOVEMBER|DECEMBER|"
    "JAN|FEB|MAR|APR|JUN|JUL|AUG|SEPT?|OCT|NOV|DEC"
)
_MONTH_TITLE = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sept?|Oct|Nov|Dec"
_DAY_WORD = r"(?:[12]\d|3[01]|0?[1-9])(?:ST|ND|RD|TH|st|nd|rd|th)?"
# "the MAR. 6 mm nodule": a medication administration record and a size, not March 6.
_NO_MEASURE = r"(?![ \t]*(?:(?i:mm|cm|mg|mcg|ml|kg|g)\b|%))"
_MONTH_WORD = (
    r"(?i:january|february|march|april|may|june|july|august|september|october|november|december|"
    r"jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)\.?"
)
# The day of the week is part of the date it names ("Friday, August 15"): Safe Harbor removes every
# element of a date but the year, and a weekday with a month and day narrows the year down.
_WEEKDAY = (
    r"(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|(?:Mon|Tue|Tues|Wed|Thu|Thur|Thurs|Fri|Sat|Sun|MON|TUE|TUES|WED|THU|THUR|THURS|FRI|SAT|SUN)\.?"
)
# Top-level domains, in lower case only ("weeks.My" is two sentences).
_TLDS = "com|org|net|edu|gov|info|io|me|ly|co|us|uk|ca|au|de|fr|in|ng|za|nz|ie"
# What follows a number that is a dose or a duration, not a house number.
_UNIT_WORDS = (
    r"(?:mg|mcg|ml|g|iu|units?|mm|cc|pills?|tablets?|caps?|days?|weeks?|months?|years?|times?|hours?)\b"
)
_PLACE_WORD = rf"(?!(?:{_STATE_NAMES})\b)\p{{Lu}}\p{{Ll}}+(?:['’]\p{{Ll}}+)?"
_ZIP = r"\d{5}(?:-\d{4})?(?![\w-]|[ \t]*\d)"  # "07700 900123" is a phone number
# A value made of letter/digit groups joined by dashes or spaces, at least one digit ("35A-8807-26").
# Not a percentage range or a questionnaire's score ("EF 35-40%", "PHQ-9 score 17").
_CODE = (
    # nor a code-set's name nor a spinal level ("C5-C6", "L4-L5", "T12-L1")
    r"(?<![\w-])(?!(?:ICD|CPT|DSM|HCPCS)-)(?![CTLS]\d{1,2}-[CTLS]\d{1,2}(?![\w-]))"
    r"(?=[\w-]*\d)[A-Z0-9]{1,8}(?:-[A-Z0-9]{1,8}){1,4}(?![\w-])"
    r"(?![ \t]*(?:%|(?i:score|points?)\b))"
)
# Between a cue and its value in a lookbehind: an optional colon and a few spaces or tabs. Bounded, since
# a lookbehind is tried at every position of a run of spaces, and unbounded runs on both sides of the
# colon would scan the whole run back, once per split of it (cubic in the run's length).
CUE_GAP = r"(?:[ \t]{0,8}:)?[ \t]{1,8}"
# A fraction of something or a dose, not a date ("2/3 of visits", "1/4 tab").
FRACTION_AFTER = r"(?![ \t]*(?:%|(?i:of|tabs?|tablets?|caps?|capsules?|mg|ml|dose|strength)\b))"
# A month and a day without a year, not a rating ("7/10").
_MONTH_DAY = rf"(?:0?[1-9]|1[0-2])/(?!10\b)(?:0?[1-9]|[12]\d|3[01])(?![\w/]|\.\d){FRACTION_AFTER}"
# After a word that announces a date ("on 8/10", "seen 3/10") a tenth is a day, not a rating.
_MONTH_DAY_ANY = rf"(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])(?![\w/]|\.\d){FRACTION_AFTER}"
_MIXED = r"(?<![\w-])(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{5,12}(?![\w-])"  # an MBI has 11


def _recognizer(
    entity: str, name: str, regex: str, score: float, context: list[str] | None = None
) -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity=entity,
        name=name,
        patterns=[Pattern(name, regex, score)],
        context=context or [],
        global_regex_flags=re.MULTILINE,
    )


def context_recognizers() -> list[EntityRecognizer]:
    """Numbers, dates, ages and places told apart by a neighbouring word or their shape."""
    street_suffix = (
        r"(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|court|ct|place|pl|way|terrace|"
        r"circle|parkway|pkwy|highway|hwy|trail|pike|crossing|square)\b\.?"
    )
    return [
        _recognizer(
            "URL",
            "web address without a scheme",
            rf"(?<![\w@.-])(?:[a-z0-9-]+\.)+(?:{_TLDS})\b(?:/[^\s<>\"')\]]*[\w/])?",
            0.6,
        ),
        _recognizer(
            "DATE_TIME",
            "month in capitals or before a dash",
            rf"\b{_DAY_WORD}[ \t-]+(?:OF[ \t]+|of[ \t]+)?(?:{_MONTH_CAPS})\b(?:,?[ \t-]+(?:19|20)\d{{2}}\b)?"
            rf"|\b(?:{_MONTH_CAPS})\b\.?[ \t-]+{_DAY_WORD}\b{_NO_MEASURE}(?:,?[ \t-]+(?:19|20)\d{{2}}\b)?"
            rf"|\b(?:{_MONTH_TITLE})-\d{{1,2}}\b"
            # "30JUL2022", "09Sept2021", "20-Sept-2020", "May. 17 1919"
            rf"|\b{_DAY_WORD}-?(?:{_MONTH_CAPS}|{_MONTH_TITLE})-?(?:19|20)\d{{2}}\b"
            rf"|\b(?:{_MONTH_TITLE}|{_MONTH_CAPS})\.[ \t]+{_DAY_WORD}\b{_NO_MEASURE}(?:,?[ \t]+(?:19|20)\d{{2}}\b)?",
            0.6,
        ),
        _recognizer(
            "DATE_TIME",
            "weekday with a date",
            rf"\b(?:{_WEEKDAY}),?[ \t]+(?:{_MONTH_WORD}[ \t]+{_DAY_WORD}\b(?:,?[ \t]+(?:19|20)\d{{2}}\b)?"
            rf"|(?:the[ \t]+)?{_DAY_WORD}[ \t]+(?:of[ \t]+)?{_MONTH_WORD}(?![\w])(?:,?[ \t]+(?:19|20)\d{{2}}\b)?"
            r"|(?:0?[1-9]|1[0-2])[/.-](?:0?[1-9]|[12]\d|3[01])(?:[/.-](?:19|20)?\d{2})?(?![\w/]|\.\d))",
            0.6,
        ),
        _recognizer(
            "ADDRESS",
            "street address in lower case",
            rf"\b(?:(?:flat|apt|apartment|unit|suite)\.?[ \t]*\w+,?[ \t]+)?\d{{3,6}}[ \t]+(?!{_UNIT_WORDS})(?:[nsew]\.?[ \t]+)?"
            rf"(?:\p{{Ll}}+[ \t]+){{1,3}}{street_suffix}(?:,?[ \t]*(?:(?:apt|unit|suite|flat)\.?[ \t]*|\#)\w+)?",
            0.5,
        ),
        _recognizer(
            "ADDRESS",
            "town after an address",
            rf"(?<=(?:\b\d{{1,6}}[ \t]+(?:\S+[ \t]+){{1,4}}(?i:{street_suffix})|\b(?i:box|route|rr)[ \t]*\#?\d+"
            # a street named without its number, capitalised ("on Elm St in Flushing")
            r"|\b(?:\p{Lu}[\p{L}'’-]*[ \t]+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Way|"
            rf"Terrace|Court|Ct|Place|Parkway|Pkwy|Highway|Hwy|Circle)\.?)(?:,?[ \t]*(?:(?i:apt|unit|suite|flat)\.?[ \t]*|\#)\w+)?"
            r"(?:,[ \t]*(?:in[ \t]+)?|[ \t]+in[ \t]+))(?!(?i:in|at|and|with|for)\b)\p{L}[\p{L}'’]+(?:[ \t]+\p{L}[\p{L}'’]+){0,2}(?=[ \t]*[.,;(]|[ \t]*$)",
            0.5,
        ),
        _recognizer(
            "PHONE_NUMBER",
            "local seven-digit number",
            r"(?<![\w/.-])\d{3}[-.]\d{4}(?![\w/-]|\.\d)",
            _CONTEXT_ONLY,
            [
                "phone",
                "tel",
                "telephone",
                "call",
                "called",
                "cell",
                "mobile",
                "pager",
                "fax",
                "reach",
                "number",
                "contact",
                "home",
                "work",
                "ext",
                "manager",
                "office",
            ],
        ),
        _recognizer(
            "PHONE_NUMBER",
            # Spelled NXX-XXXX, no dose or duration after it: a local number (spaCy counts "call" as a
            # stop word, so Presidio never takes it for context)
            "local seven-digit number with a dash",
            rf"(?<![\w/.-])[2-9]\d{{2}}-\d{{4}}(?![\w/-]|\.\d)(?![ \t]*(?:%|{_UNIT_WORDS}))",
            0.4,
        ),
        _recognizer(
            "PHONE_NUMBER",
            # an extension written after the number it belongs to ("555-201-3344 ext. 12", "x 4410")
            "phone number with its extension",
            r"(?<![\w+-])(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}[ \t]*,?[ \t]*"
            r"(?i:ext(?:ension)?\.?|x)[ \t]*\d{1,6}\b",
            0.6,
        ),
        _recognizer(
            "PHONE_NUMBER",
            "extension",
            r"\b(?i:ext(?:ension)?\.?|x)[ \t]*\d{1,6}\b(?<=\d)",
            0.1,
            ["phone", "tel", "call", "number", "fax", "cell", "pager"],
        ),
        _recognizer(
            "ACCOUNT",
            "code after an identifier word",
            rf"{_CODE}|{_MIXED}",
            _CONTEXT_ONLY,
            [
                "chart",
                "mrn",
                "record",
                "serial",
                "insurance",
                "policy",
                "member",
                "subscriber",
                "licence",
                "license",
                "coverage",
                "beneficiary",
                "plate",
                "registration",
                "vin",
                "vehicle",
                "device",
                "pacemaker",
                "dea",
                "npi",
                "implant",
                "medicaid",
                "medicare",
                "group",
            ],
        ),
        _recognizer(
            "ACCOUNT",
            # Context words match as substrings ("id" is in "covid"): a short label must come right before
            "code after a short label",
            r"(?<=\b(?i:lic|rec|sn|s/n|udi|mbi|id|dl)\.?(?:[ \t]*(?i:no|number|\#)\.?)?[ \t]*[:#]?[ \t]*)"
            rf"(?:{_CODE}|{_MIXED}|\d{{5,}}\b)",
            0.6,
        ),
        _recognizer(
            "ACCOUNT",
            # a laboratory's or pathology department's specimen number ("Accession: S17-10225"), and an
            # SSN written with spaces after its label (Presidio's SSN recogniser refuses invalid areas
            # such as 666 or 9xx, which a form may still hold)
            "accession, specimen or social security number after its label",
            r"(?<=\b(?i:accession|(?:specimen|surgical[ \t]+pathology|path(?:ology)?)[ \t]+(?:id|number|no\.?|\#))"
            r"[ \t]*(?:(?i:no|number|\#)\.?)?[ \t]*[:#]?[ \t]*)(?=[\w-]*\d{3})[A-Za-z0-9][A-Za-z0-9-]{3,19}\b"
            r"|(?<=\b(?i:SSN|social[ \t]+security(?:[ \t]+(?:number|no\.?|\#))?)[ \t]*[:#]?[ \t]*)\d{3}[ ]\d{2}[ ]\d{4}\b",
            0.6,
        ),
        _recognizer(
            "ACCOUNT",
            "record number in brackets after a patient's name",  # "Pt: LUO, JING (196-88-18)"
            r"(?<=^[ \t]*(?i:pt|patient|name|patient[ \t]+name)[ \t]*:[^\n(]{2,60}\([ \t]*)"
            r"(?=[\w-]*\d{3})[A-Z0-9][A-Z0-9-]{4,14}(?=[ \t]*\))",
            0.6,
        ),
        _recognizer(
            "ACCOUNT",
            "vehicle identification number",
            r"\b(?=[A-HJ-NPR-Z0-9]*\d)(?=[A-HJ-NPR-Z0-9]*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}\b",
            0.6,
        ),
        _recognizer(
            "DATE_TIME",
            "month and day",
            r"(?<![\w/.-])(?<!(?i:pain|score|scale|rated|level|strength|power|grade|apgars?)[ \t:]{1,3})"
            rf"(?:0?[1-9]|1[0-2])/(?!10\b)(?:0?[1-9]|[12]\d|3[01])(?![\w/]|\.\d){FRACTION_AFTER}",  # "7/10": a rating
            _CONTEXT_ONLY,
            [
                "date",
                "discharged",
                "discharge",
                "admitted",
                "admit",
                "admission",
                "visit",
                "seen",
                "appointment",
                "appt",
                "surgery",
                "procedure",
                "dated",
                "returned",
                "started",
                "stopped",
                "dob",
                "birth",
                "study",
                "compared",
                "note",
                "prior",
            ],
        ),
        _recognizer(
            "DATE_TIME",
            "month and day after a preposition or a label, or before a time",
            rf"(?<=\b(?i:on|since|through|thru|until|till|before|after|dated|due|transcribed|dictated|"
            rf"received|collected|signed|effective|starting|ending|sent|seen|check|recheck|visit|appt)"
            rf"{CUE_GAP}){_MONTH_DAY_ANY}"
            rf"|(?<![\w/.-]){_MONTH_DAY}(?=[ \t]+(?:(?:[01]?\d|2[0-3]):[0-5]\d|(?:[01]\d|2[0-3])[0-5]\d)\b)"
            # a letter's date on a line of its own
            rf"|^[ \t]*{_MONTH_DAY}(?=[ \t]*$)",
            0.6,
        ),
        _recognizer(
            "ACCOUNT",
            "unique device identifier (GS1)",
            r"\(01\)\d{14}(?:\(\d{2,4}\)[A-Za-z0-9-]+)*",
            0.7,
        ),
        _recognizer(
            "ACCOUNT",
            "licence plate",
            # up to three groups joined by a space or a dash ("8 TRW 441", "2-DMV-773"), after "plate",
            # "tag", "plates read", "plate number is"
            r"(?<=\b(?i:plates?|tags?|registration|reg\.?)(?:[ \t]{1,8}(?i:no\.?|number|\#))?(?:[ \t]{0,8}[:#])?"
            r"[ \t]{0,8}(?:(?i:is|reads?|read|was|of)[ \t]{1,8})?)"
            # a plate is at most 14 characters: the lookaheads for its digit and letter look no further
            r"(?=[A-Z0-9 -]{0,13}\d)(?=[A-Z0-9 -]{0,13}[A-Z])[A-Z0-9]{1,4}(?:[ -]?[A-Z0-9]{1,4}){0,2}\b",
            0.6,
        ),
        _recognizer(
            "AGE_OVER_89",
            "age over 89 with a unit",
            r"\b(?:9\d|1[01]\d)(?=[ \t-]*(?i:y\.[ \t]?o\.|y/o|yo\b|yrs?\b|years?[ \t-]+(?:of[ \t]+age|old)\b)"
            r"|[ \t/]?(?:[MF]|yo[MF])\b)",
            0.6,
        ),
        _recognizer(
            "ADDRESS",
            "city before a ZIP",
            rf"(?<![\w,])(?:{_PLACE_WORD}[ \t]+){{0,2}}{_PLACE_WORD}(?=,?[ \t]+(?:(?:{_STATE_CODES}|{_STATE_NAMES}),?[ \t]+)?{_ZIP})"
            rf"|(?<=\b{_PLACE_WORD},?[ \t]+){_ZIP}",
            0.5,
        ),
        _recognizer("ADDRESS", "ZIP after a state", rf"(?<=\b(?:{_STATE_NAMES}),?[ \t]+){_ZIP}", 0.6),
        _recognizer(
            "ADDRESS",
            "rural route",
            r"\b(?i:rural[ \t]+route|highway[ \t]+contract)[ \t]*\#?\d+(?:[ \t,]+(?i:box)[ \t]*\#?\d+)?\b"
            r"|\b(?i:RR|R\.R\.|HC)[ \t]*\#?\d+[ \t,]+(?i:box)[ \t]*\#?\d+\b",  # "RR 18" alone is a breathing rate
            0.6,
        ),
    ]


# A line is in lower case when at most this share of its letters are capitals ("100F" in chat), in
# capitals when at least this share of its words are (an IPv6 address's "db8" beside them).
_MIXED_CASE = 0.1
_CAPITALS_LINE = 0.6
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def case_normalised(text: str, english: frozenset[str]) -> str:
    """The text with each line written in capitals or in lower case put in title case, offsets
    kept: a capitals line fully ("MERCY VALLEY MEDICAL CENTER" -> "Mercy Valley Medical Center"), a
    lower-case line only in the words that are not English ("bed 12 is juan" -> "bed 12 is Juan"), so that
    the words around a name still read as words. A word whose title case changes its length stays."""
    lines = []
    for line in text.splitlines(keepends=True):
        letters = [c for c in line if c.isalpha()]
        words = [w for w in _WORD.findall(line) if len(w) > 1]
        upper = bool(words) and sum(w.isupper() for w in words) >= _CAPITALS_LINE * len(words)
        lower = bool(letters) and sum(c.isupper() for c in letters) <= _MIXED_CASE * len(letters)
        if len(letters) < 4 or not (upper or lower):
            lines.append(line)
            continue

        def title(match: re.Match[str], upper: bool = upper) -> str:
            word = match.group()
            if not (word.isupper() if upper else word.islower()) or (not upper and is_english(word, english)):
                return word
            titled = word[:1].upper() + word[1:].lower()
            return titled if len(titled) == len(word) else word

        lines.append(_WORD.sub(title, line))
    return "".join(lines)


def is_english(word: str, english: frozenset[str]) -> bool:
    """A word, or its stem less a plural or tense ending, in the English word list."""
    lower = re.split(r"['’]", word.lower())[0]  # "you'll", "doctor's"
    if len(lower) <= 2 or lower in english:
        return True
    if lower.endswith("ies") and lower[:-3] + "y" in english:
        return True
    if lower.endswith("ing") and lower[:-3] + "e" in english:
        return True  # "having", "producing"
    return any(lower.endswith(end) and lower[: -len(end)] in english for end in ("s", "es", "ed", "d", "ing"))
