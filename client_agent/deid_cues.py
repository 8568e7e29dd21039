"""Presidio recognisers for identifiers that a cue phrase announces and whose shape alone says little.

The last four digits of a social security number ("SSN ending 4471", "xxx-xx-4471"), a licence number
with dots or dashes after its label ("DL# S530.460.72.811"), and a month and day without a year after a
word that dates it ("LMP 10/2", "night shift 4/10", "goals by 5/1"). Each is a ``PatternRecognizer``
whose entity name maps to a placeholder type in :mod:`client_agent.deid_presidio`.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, PatternRecognizer

from client_agent.deid_context import CUE_GAP, FRACTION_AFTER
from client_agent.deid_patterns import DIRECTION, ORDINAL, PARTICLES, UNIT, case_pattern
from client_agent.deid_words import STREET_PARTICLE, WELL_KNOWN_HOSPITALS

_SSN_WORD = r"(?i:ssn|ss\#|soc(?:ial)?[ \t]+sec(?:urity)?(?:[ \t]+(?:number|no\.?|\#))?)"
_LAST_FOUR = r"(?i:last|final)[ \t]+(?:4|four)(?:[ \t]+(?i:digits?|numbers?))?"
# A value of letter and digit groups joined by dots or dashes with a digit in it ("S530.460.72.811",
# "RN.884213", "F255-921-50-094"), or one group of five or more with a digit.
_LICENCE_VALUE = (
    r"(?<![\w.-])(?=[A-Za-z0-9.-]*\d)[A-Za-z0-9]{1,9}(?:[.-][A-Za-z0-9]{1,9}){1,5}(?![\w-]|\.\w)"
    r"|(?<![\w.-])(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{5,20}\b"
    r"|(?<![\w.-])\d{3,5}(?:[ ]\d{2,5}){1,3}\b"  # digit groups with spaces: "1102 3349 872"
)
_LICENCE_LABEL = (
    r"(?i:(?:driver['’]?s?|driving|drivers|professional|nursing|medical|state)[ \t]+licen[cs]e|"
    r"licen[cs]e|lic|dl|d/l)"
)
_MONTH_DAY = rf"(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])(?![\w/]|\.\d){FRACTION_AFTER}"
# A proper fraction ("by 1/2"), which after "by" is a fraction, not a date.
_PROPER_FRACTION = r"(?:1/[2-8]|2/[3-8]|3/[4-8]|4/[5-8]|5/[6-8]|6/[78]|7/8)(?!\d)"


_WORD = r"\p{Lu}[\p{L}'’-]*"
# Where a person lives or was found: the street after it may lack its type ("lives at 2209 Sycamore").
_HOME_CUE = (
    r"(?i:(?:lives?|living|resides?|residing|stays?|staying|bed|found|located|picked[ \t]+up)[ \t]+at|"
    r"(?:discharged|going|went|returned|returning|sent|transported|taken|dc['’]?d)[ \t]+(?:back[ \t]+)?home[ \t]+to|"
    r"home[ \t]+is|(?:home|mailing|street|residential)[ \t]+address(?:[ \t]+is)?[ \t]*:?|"
    r"address[ \t]+on[ \t]+file[ \t]*:?)"
)
# German and Dutch street names end in their street word, with the number after ("Lindenstraße 12").
_GERMANIC_STREET = (
    r"(?<!\p{L})(?:\p{Lu}\p{L}+[ \t]+)?\p{Lu}\p{Ll}+(?:stra(?:ß|ss)e|str\.|weg|gasse|allee|platz|ufer|damm|straat|laan|"
    r"gracht|plein)[ \t]+\d{1,4}[a-z]?\b"
    r"|(?<!\p{L})(?:\p{Lu}\p{L}+[ \t]+){1,2}(?:Stra(?:ß|ss)e|Weg|Gasse|Allee|Platz)[ \t]+\d{1,4}[a-z]?\b"
)
# Spanish and Portuguese street words before the name, the number after it ("Calle Luna 224").
_IBERIAN_STREET = (
    rf"\b(?:Calle|Avenida|Avda\.?|Av\.|Carrera|Paseo|Calzada|Callej[oó]n|Carretera|Rua|Travessa|Estrada)[ \t]+"
    rf"(?:(?:{_WORD}|{STREET_PARTICLE})[ \t]+){{0,4}}{_WORD}"
    r"(?:,?[ \t]*(?:\#|No\.?|N[º°]|(?i:n[úu]m)\.?)?[ \t]*\d{1,5}[A-Za-z]?\b)"
)


_PERSON_WORD = r"\p{Lu}[\p{L}'’]+(?:-\p{L}[\p{L}'’]*)*"
# A line's label whose value is the patient's name, whatever words it is made of ("Patient: April Fox").
_PATIENT_LABEL = r"(?i:patient|pt|patient['’]?s[ \t]+name|name|full[ \t]+name|decedent|deceased|client)"
_NICKNAME_CUE = (
    r"(?i:prefers|preferred[ \t]+name|goes[ \t]+by|called|nick[- ]?named?|a\.?k\.?a\.?|known[ \t]+as)"
    r"(?:[ \t]+(?i:to[ \t]+be[ \t]+called))?"
)
# A handoff line that puts the bed first: "bay 16: Okafor, 57 y/o", "Rm 12: Castellanos, 71M".
_BED = r"(?i:bay|bed|rm|room|pod|stretcher|hall(?:way)?|chair)[ \t]*\#?[ \t]*\d{1,3}[A-Za-z]?"


def cue_recognizers() -> list[EntityRecognizer]:
    """Partial SSNs, labelled licence numbers, month/day dates, street addresses, facilities and names,
    each after its cue."""
    return [
        case_pattern(
            "LABELLED_NAME",
            "the whole value of a patient's name field",
            rf"(?<=^[ \t]*{_PATIENT_LABEL}[ \t]*:[ \t]*){_PERSON_WORD}"
            rf"(?:[ \t]+(?:\p{{Lu}}\.?|{PARTICLES}{_PERSON_WORD})){{1,3}}"
            r"(?=[ \t]*(?:$|[,;|(]|[ \t]{2}|[ \t]+(?:DOB|MRN|Age|Sex|DOD|ID)\b))",
            0.6,
        ),
        case_pattern(
            "NICKNAME",
            "name a patient goes by",
            # in quotes after the cue ("prefers 'Gretchen'", "goes by \"Bubba\"")
            rf"(?<=\b{_NICKNAME_CUE}[ \t]*:?[ \t]*[\"“'‘])\p{{L}}[\p{{L}}'’.-]*(?:[ \t]+\p{{L}}[\p{{L}}'’.-]*){{0,2}}"
            r"(?=[\"”'’])"
            # capitalised without quotes after a cue that can only name ("prefers to be called Tito")
            r"|(?<=\b(?i:prefers[ \t]+to[ \t]+be[ \t]+called|goes[ \t]+by|nick[- ]?named|known[ \t]+as)[ \t]+)"
            rf"{_PERSON_WORD}",
            0.6,
        ),
        case_pattern(
            "AGED_NAME",
            "surname after a bed on a handoff line",
            rf"(?<=^[ \t]*{_BED}[ \t]*[:)\-–—][ \t]*){_PERSON_WORD}"
            r"(?=,?[ \t]+\d{1,3}[ \t-]*(?i:y/?o|yo|y\.o\.|yrs?|years?|[mf])\b|,?[ \t]+\d{1,3}[MF]\b)",
            0.6,
        ),
        # Presidio's deny list, case-sensitive: "Hopkins", "Cedars-Sinai" named bare
        PatternRecognizer(
            supported_entity="FACILITY",
            name="well-known hospital named bare",
            deny_list=list(WELL_KNOWN_HOSPITALS),
            deny_list_score=0.6,
            global_regex_flags=re.MULTILINE,
        ),
        case_pattern(
            "ADDRESS",
            "street address after where a person lives",
            rf"(?<=\b{_HOME_CUE}[ \t]+)\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?[ \t]+(?:{DIRECTION}[ \t]+)?"
            rf"(?:(?:{_WORD}\.?|{ORDINAL})[ \t]+){{0,3}}{_WORD}{UNIT}",
            0.6,
        ),
        case_pattern("ADDRESS", "German or Dutch street address", _GERMANIC_STREET, 0.6),
        case_pattern("ADDRESS", "Spanish or Portuguese street address, number after", _IBERIAN_STREET, 0.6),
        case_pattern(
            "US_SSN",
            "last four digits of a social security number",
            # "SSN ending 4471", "SSN on file ending in 7714", "ssn last four 1946", "SSN (last 4): 3307"
            rf"(?<=\b(?:{_SSN_WORD}[^\n.;\d]{{0,24}}?|(?i:social)[ \t]+)\b(?i:ending|ends|(?:last|final)[ \t]+(?:4|four))\b"
            r"[^\n.;\d]{0,16}?)(?<!\w)(?<!\w-)\d{4}(?![\w-])"
            # "last 4 of SSN 0932", "last four of social security: 2231"
            rf"|(?<=\b{_LAST_FOUR}[ \t]+(?i:of[ \t]+)?(?:(?i:the|his|her|their|pt['’]?s|patient['’]?s)[ \t]+)?"
            rf"{_SSN_WORD}[ \t]*[:#-]?[ \t]*(?:(?i:is|was)[ \t]+)?)\d{{4}}(?![\w-])"
            # a masked SSN: "xxx-xx-5521", "***-**-8840"
            r"|(?<![\w*#-])(?:[xX]{3}|\*{3}|\#{3})[- ]?(?:[xX]{2}|\*{2}|\#{2})[- ]?\d{4}(?![\w-])",
            0.8,
        ),
        case_pattern(
            "ACCOUNT",
            "licence number after its label",
            rf"(?<=\b{_LICENCE_LABEL}\.?(?:[ \t]*(?i:no|number|\#)\.?)?[ \t]*[:#]?[ \t]*(?:(?i:is)[ \t]+)?)"
            rf"(?:{_LICENCE_VALUE})",
            0.6,
        ),
        case_pattern(
            "DATE_TIME",
            "month and day after a word that dates it",
            # a tenth here is a day ("night shift 4/10"), not a rating; after "by" a fraction is a
            # fraction ("reduce by 1/2")
            r"(?<=\b(?i:lmp|lnmp|edd|edc|shift|week[ \t]+of|(?:come|coming|came|be|back)[ \t]+in(?:[ \t]+on)?|"
            r"began|begun|onset|due|rtc|return(?:ed|ing)?|f/u|follow[- ]?up|surgery|scheduled|booked)"
            rf"{CUE_GAP}(?:(?i:approx\.?|approximately|about|around|~|on|of|was|is|=)[ \t]{{0,8}})?){_MONTH_DAY}"
            rf"|(?<=\b(?i:by|goals?[ \t]+by)[ \t]{{1,8}})(?!{_PROPER_FRACTION}){_MONTH_DAY}",
            0.6,
        ),
    ]
