"""Our Presidio pattern recognisers: what neither Presidio's recognisers nor our rules find.

Facility names by their head noun or a cue, PO boxes, account numbers, ages over 89 in words, and names
by the cue that announces them (a title in any case, a field label, a person's role, a relationship word,
a credential after the name, "Surname, Given"). Each is a ``PatternRecognizer`` whose entity name maps to
a placeholder type in :mod:`client_agent.deid_presidio`; the filters that drop implausible matches are in
:mod:`client_agent.deid_filters`.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer

from client_agent.deid_words import ROMANCE_STREET, STREET_PARTICLE

FACILITY_HEAD = (
    r"(?:Hospital|Medical[ \t]+Cent(?:er|re)|Health[ \t]+(?:Cent(?:er|re)|System|Service)|Clinic|Infirmary|"
    r"Hospice|Nursing[ \t]+Home|Rehabilitation[ \t]+Cent(?:er|re)|Care[ \t]+Cent(?:er|re)|Urgent[ \t]+Care|"
    r"Dialysis[ \t]+(?:Unit|Cent(?:er|re))|Behavioral[ \t]+Health|Children['’]s|Medical[ \t]+Group|General|"
    r"Women['’]s[ \t]+Health|Pediatrics|Paediatrics|Family[ \t]+(?:Medicine|Practice)|Medical[ \t]+Associates|"
    r"Surgery[ \t]+Cent(?:er|re)|Surgical[ \t]+Cent(?:er|re)|Cancer[ \t]+Cent(?:er|re)|Imaging[ \t]+Cent(?:er|re)|"
    r"Memorial|Health[ \t]+Partners|Physicians|Memory[ \t]+Care|Skilled[ \t]+Nursing(?:[ \t]+Facility)?|"
    r"Assisted[ \t]+Living|Rehab(?:[ \t]+Cent(?:er|re))?|Dialysis|H[oô]pital|Pharmacy|Associates|Institute|"
    r"Nursing[ \t]+(?:and|&)[ \t]+Rehabilitation|Senior[ \t]+Living|Home[ \t]+Care|Adult[ \t]+Day(?:[ \t]+Health)?|"
    # hospitals named for the church that founded them ("Valley Presbyterian", "Providence Sacred Heart"),
    # practices and health centres named for whom they serve, residences for the elderly
    r"Presbyterian|Methodist|Baptist|Lutheran|Adventist|Episcopal|Sacred[ \t]+Heart|Good[ \t]+Samaritan|"
    r"(?:Family|Community|Regional|Primary)[ \t]+(?:Health|Care)(?:[ \t]+Cent(?:er|re))?|Manor|Retirement[ \t]+Home)"
)
# What follows a facility's name and belongs to it ("Hope Hospice House", "St. Anne's Home").
_FACILITY_TAIL = r"(?:[ \t]+(?:Hospital|Medical[ \t]+Cent(?:er|re)|Research[ \t]+Hospital|House|Home|Campus|Manor|Pavilion))?"
# Presidio compiles patterns with the `regex` module: \p{Lu} is any capital, and lookbehinds may vary.
_CAP = r"\p{Lu}[\w'’-]*"
_NAME_WORD = r"\p{Lu}[\p{L}'’]+(?:-\p{L}[\p{L}'’]*)*"  # "Ben-David-Fonoti"
_ANY_NAME_WORD = r"\p{L}[\p{L}'’]+(?:-\p{L}[\p{L}'’]*)*"
# A given name after "Surname," is not the next field's label ("Baker Eleni, DOB ...").
_GIVEN = rf"(?!(?:DOB|DOD|MRN|SSN|ID|MR|DX|HX|RX|FAX|TEL|AGE|SEX|ACCT|NPI|DEA)\b){_NAME_WORD}"
_CAPS_WORD = r"\p{Lu}[\p{Lu}'’-]+"
# The start of a word, not a letter after a hyphen or an apostrophe inside one: `\b` there would try a
# match again after every hyphen of a long hyphenated token, each scanning to its end (quadratic).
WORD_START = r"(?<![\w'’-])"
# Irish "Ó"/"Ní" ("Seán Ó Briain") are written capitalised or not.
PARTICLE = r"(?:van|von|de|der|den|da|di|du|del|la|le|bin|ibn|al|abu|ní|Ní|ó|Ó|nic|Nic|mac)"
# At most three particles in a row: an unbounded run would be rescanned from each of its particles.
PARTICLES = rf"(?:{PARTICLE}[ \t]+){{0,3}}"
# Up to two more words of a name after its first, particles between them ("Ana de la Cruz").
_MORE_NAME_WORDS = rf"(?:[ \t]+{PARTICLES}{_NAME_WORD}){{0,2}}"
# A surname with particles inside ("Van der Berg", "de la Cruz").
_SURNAME = rf"(?:(?:{_NAME_WORD}[ \t]+)?(?:(?i:{PARTICLE})[ \t]+){{1,3}})?{_NAME_WORD}"
# Credentials written after a clinician's name ("Amal Darwish, LICSW").
CREDENTIAL = (
    r"(?:MD|M\.D\.|DO|RN|NP|PA-C|PhD|PharmD|LPN|LVN|CNA|CRNA|CNM|LICSW|LCSW|MSW|CDE|CDCES|MBBS|FNP(?:-BC)?|"
    r"APRN|DNP|DPM|DDS|DMD|RPh|BSN|MSN)\b"
)
_INITIAL = r"(?:\p{Lu}\.[ \t]*)"
_NUMBER_WORD = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen)"
# "NP" (nurse practitioner) is written before a name as "Dr" is; after a comma it is a credential.
_TITLE = r"(?:(?i:dr|mr|mrs|ms|mx|miss|prof|nurse)\.?|(?<![,-][ \t]?)NP)"
_NAME_LABEL = (
    r"(?i:patient|pt|name|dictated[ \t]+by|signed(?:[ \t]+by)?|attending|guardian|caregiver|decedent|deceased|"
    r"client|insured|subscriber)"
)
# A line's label naming a person's role ("REF PHYS:", "PT NAME", "Emergency contact:"); the name after it.
_ROLE_LABEL = (
    r"(?i:(?:pt|patient)(?:['’]s)?(?:[ \t]+name)?|name|(?:ref(?:erring)?|attending|admitting|primary)[ \t]+"
    r"(?:phys(?:ician)?|dr|doctor|md|provider|clinician)|ref[ \t]+by|attending|physician|provider|pcp|nurse|"
    r"rn|np|surgeon|resident|fellow|(?:emergency[ \t]+)?contact|nok|next[ \t]+of[ \t]+kin|guardian|"
    r"caregiver|informant|interpreter|dictated[ \t]+by|signed(?:[ \t]+by)?|cc|author|seen[ \t]+by|re|"
    r"subject|from|to|decedent|deceased|client)"
)
ROLE_RECOGNIZER = "name after a person's role as a label"
_NOT_A_NAME = (
    r"(?!(?i:a|an|the|my|our|your|his|her|their|not|to|in|on|at|by|for|from|with|and|or|no|yes|it|this|that|is|was|"
    r"has|had|who|will|just|also|here|dr|mr|mrs|ms|mx|miss|prof|nurse|patient|pt)\b)"
)
# Words after which a person's name follows: relationships, conversation, a letter's salutation; a name
# introducing oneself may be written in lower case, any other is capitalised.
_SELF_CUE = r"(?i:this[ \t]+is|my[ \t]+name[ \t]+is)"
_PERSON_CUE = (
    r"(?i:spoke|speaking|met|talked|discussed|visited|accompanied|seen)[ \t]+(?i:with|by|to)"
    r"|(?i:seeing|called|hi|hello|dear|sincerely|regards|thanks|thank[ \t]+you|cheers|pcp|gp)"
    r"|(?i:my|our)[ \t]+(?i:patient|client)"
    r"|(?i:daughter|son|wife|husband|niece|nephew|mother|father|sister|brother|caregiver|partner|spouse)"
    r"|(?i:grandson|granddaughter|grandmother|grandfather|aunt|uncle|cousin|guardian|friend|neighbou?r)"
    r"|(?i:coordinator|manager|worker|therapist|aide|chaplain|pharmacist|dietitian|navigator|liaison|"
    r"interpreter|translator|educator|counselor|counsellor)"
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


# A unit after the street's type, with or without a comma ("Apt 2", ", Unit 12", "Lot 14", "#7B").
UNIT = (
    r"(?:,?[ \t]*(?:(?i:apt|apartment|suite|ste|unit|flat|lot|space|spc|trailer|trlr|rm|room|bldg|building|"
    r"fl|floor)\.?[ \t]*\#?[ \t]*|\#[ \t]*)(?=\w*\d|\p{Lu}\b)\w+){0,2}"
)
# A numbered street ("5th Street", "42nd Ave").
ORDINAL = r"\d{1,3}(?:st|nd|rd|th)"
# A direction before the street's name, spelled or abbreviated ("North", "N.", "NE", "Southwest").
DIRECTION = r"(?:(?:North|South)(?:east|west)?|East|West|[NS][EW]?|[EW])\.?"


def case_pattern(entity: str, name: str, regex: str, score: float) -> PatternRecognizer:
    """One Presidio pattern recogniser whose regex keeps its case (Presidio's default flags ignore it) and
    reads `^`/`$` at every line."""
    return PatternRecognizer(
        supported_entity=entity,
        name=name,
        patterns=[Pattern(name, regex, score)],
        global_regex_flags=re.MULTILINE,
    )


def our_patterns() -> list[EntityRecognizer]:
    """What neither Presidio nor our rules find."""
    name = rf"{_INITIAL}?{_NAME_WORD}{_MORE_NAME_WORDS}"
    middle = r"(?:[ \t]+\p{Lu}\.)?"  # "Hamdan, Yousef F."
    return [
        case_pattern(
            "FACILITY",
            "facility by its head noun",
            rf"{WORD_START}(?:(?:St\.?|Saint|Mount|Mt\.?|Our[ \t]+Lady[ \t]+of)[ \t]+)?(?:{_CAP}[ \t]+(?:(?:and|of|for)[ \t]+)?){{1,5}}"
            rf"{FACILITY_HEAD}\b{_FACILITY_TAIL}",
            0.8,
        ),
        case_pattern(
            "FACILITY",
            "facility named after its head noun, or a home with a name",
            rf"\b(?:H[oô]pital|Hospital|Clinique|Klinikum)[ \t]+(?:(?:de|du|of|for)[ \t]+(?:la[ \t]+|the[ \t]+)?)?"
            rf"(?!(?i:no|number|id|records?|ward|unit|admission|stay|course|day)\b){_CAP}(?:[ \t]+{_CAP}){{0,2}}"
            rf"|{WORD_START}(?:{_CAP}[ \t]+){{2,3}}Home\b",
            0.7,
        ),
        case_pattern(
            "FACILITY",
            "facility named for a saint",
            rf"\b(?:St\.?|Saint)[ \t]+\p{{Lu}}\p{{Ll}}+['’]s\b(?![ \t]+wort){_FACILITY_TAIL}",
            0.7,
        ),
        case_pattern(
            "CUED_FACILITY",
            "facility after a transfer verb",
            r"(?<=\b(?i:transfer(?:red)?|admitted|discharged|moved|referred|sent|seen|treated|followed|"
            r"report(?:ed|s)?|records?|notes?|went|go|goes|going|gone|presented|ED|ER|admissions?|"
            r"stud(?:y|ies)|imaging|films|images|results|labs|"
            r"works?|worked|working|employed|volunteers?|"
            r"(?:came|brought|arrived)(?:[ \t]+(?:in|over|here))?|"
            # a transport, a birth, care received at a place ("flown to", "delivered at", "prenatal care at")
            r"transported|taken|flown|airlifted|life[- ]?flighted|diverted|delivered|born|care|dialy[sz]es|"
            r"dialysis|infusions?|hospitali[sz]ed|evaluated|stabili[sz]ed|operated[ \t]+on|f/u|follow[- ]?up|"
            r"appt|appointment)[ \t](?i:from|to|at)[ \t]"
            # a clinician of a place ("Dr. Osei of Baystate")
            r"|\b(?:Dr|Doctor)\.?[ \t]+(?:\p{Lu}[\p{L}'’-]*\.?[ \t]+){0,2}\p{Lu}[\p{L}'’-]+,?[ \t]+(?:of|from|at)[ \t]"
            # an appointment with someone at a place: "follow-up with Dr. Rao at Parkland on 3/4"
            r"|\b(?i:follow[- ]?up|appointment|appt|visit)[ \t]+(?i:with)[ \t](?:[^.\n;]|(?<=\b(?i:dr|mr|mrs|ms|st))\.){1,40}?"
            r"[ \t](?i:at)[ \t])"
            rf"(?:the[ \t]+)?(?:(?:(?i:st|saint)\.?[ \t]+)?(?:\p{{Ll}}[\p{{Ll}}'’.-]*[ \t]+){{0,4}}\p{{Ll}}[\p{{Ll}}'’-]*"
            rf"(?=[ \t]+(?i:{FACILITY_HEAD}|rehab)\b)|(?i:st|saint)\.?[ \t]+\p{{L}}+"
            rf"|(?!{_TITLE}[ \t]){_CAP})"
            rf"(?:[ \t]+(?:and[ \t]+|of[ \t]+)?(?:{_CAP}|(?i:{FACILITY_HEAD}|rehab|home))){{0,4}}",
            0.5,
        ),
        case_pattern(
            "PO_BOX", "PO box", r"(?i:\b(?:P\.?[ \t]?O\.?|Post[ \t]+Office)[ \t]*Box[ \t]*#?[ \t]*\d+\b)", 0.9
        ),
        case_pattern(
            "ADDRESS",
            "street address",
            rf"\b(?:(?i:flat|apt|apartment|unit|suite)\.?[ \t]*\w+,?[ \t]+)?\d{{1,6}}[A-Za-z]?[ \t]+"
            rf"(?:{DIRECTION}[ \t]+)?(?:{_CAP}\.?|{ORDINAL})[ \t]+(?:(?:{_CAP}\.?|{STREET_PARTICLE})[ \t]+){{0,4}}{_STREET_SUFFIX}"
            rf"{UNIT}",
            0.7,
        ),
        case_pattern(
            "ADDRESS",
            "street address named in Spanish, Portuguese, French or Italian",
            rf"\b\d{{1,6}}[A-Za-z]?[ \t]+{ROMANCE_STREET}[ \t]+(?:(?:{_CAP}|{STREET_PARTICLE})[ \t]+){{0,4}}{_CAP}"
            rf"(?:[ \t]+{_STREET_SUFFIX})?{UNIT}",
            0.7,
        ),
        case_pattern(
            "CUED_PLACE",
            "place a person comes from",
            # "a 62-year-old teacher from Flint", "originally from San Juan": where a patient is from
            r"(?<=\b(?i:year[- ]old|y/?o|yo)\b[^.\n;]{0,40}?[ \t](?i:from)[ \t]"
            r"|\b(?i:is|are|was|were|originally|native|moved|relocated|immigrated|emigrated|came)[ \t]+"
            r"(?:(?i:here|originally)[ \t]+)?(?i:from)[ \t])\p{Lu}\p{Ll}+(?:[ \t]+\p{Lu}\p{Ll}+)?(?![\w'’-])",
            0.5,
        ),
        case_pattern(
            "ADDRESS",
            "place after a living verb",
            rf"(?<=\b{_PLACE_CUE}[ \t])\p{{Lu}}\p{{Ll}}+(?:[ \t]+\p{{Lu}}\p{{Ll}}+)?"
            # "lives with her son, Anil, in Yonkers": the place after whom the patient lives with
            r"|(?<=\b(?i:lives?|living|resides?|residing|stays?|staying)[ \t]+(?i:with|alone)\b[^.\n;]{0,60}?"
            r"[ \t](?i:in|near)[ \t])\p{Lu}\p{Ll}+(?:[ \t]+\p{Lu}\p{Ll}+)?",
            0.5,
        ),
        case_pattern(
            "ACCOUNT",
            "account number",
            r"(?<=\b(?i:acc(?:oun)?t|acct)\.?(?:[ \t]*(?i:no|number|\#)\.?)?[ \t]*[:#]?[ \t]*)"
            r"(?=[\w-]*\d{2})[A-Za-z0-9][\w-]{3,}",
            0.7,
        ),
        case_pattern(
            "PHONE_NUMBER",
            "phone with trunk prefix",
            r"(?<![\w-])1[- .]\(?\d{3}\)?[- .]\d{3}[- .]\d{4}\b",
            0.7,
        ),
        case_pattern(
            "AGE_OVER_89",
            "age over 89 in words",
            rf"(?i:\b(?:ninety(?:[- ]{_NUMBER_WORD})?|one[ \t]+hundred(?:[ \t]+(?:and[ \t]+)?{_NUMBER_WORD})?)\b)"
            r"(?=[- ](?:years?|yrs?|y/?o)\b|[ \t]+now\b)"
            r"|(?<=\b(?:is|turned|aged|age)[ \t])(?i:ninety(?:[- ]\w+)?|one[ \t]+hundred(?:[ \t]+(?:and[ \t]+)?\w+)?)\b"
            rf"|(?i:\b(?:ninety(?:-{_NUMBER_WORD})?|one[ \t]+hundred(?:[ \t]+{_NUMBER_WORD})?))(?=[ \t]?(?:[MF]|yo)\b)",
            0.7,
        ),
        case_pattern(
            "AGE_OVER_89",
            "age over 89 after is/turned",
            r"(?<=\b(?:is|turned|aged|age)[ \t])(?:9\d|1[01]\d)\b(?![ \t]*(?:%|mg|mm|bpm|/|\.\d))",
            0.6,
        ),
        case_pattern(
            "TITLED_NAME",
            "name after a title, any case",
            rf"(?<=\b{_TITLE}[ \t]){_ANY_NAME_WORD}{_MORE_NAME_WORDS}",
            0.6,
        ),
        case_pattern(
            "TITLED_NAME",
            "name after a label, in capitals or surname first",
            rf"(?<={_NAME_LABEL}:[ \t]*)(?:{_CAPS_WORD}(?:,?[ \t]+(?:\p{{Lu}}\.?[ \t]+)?{_CAPS_WORD}){{1,3}}\b|{_NAME_WORD},[ \t]*{_NAME_WORD}{middle})"
            rf"|(?m:^){_CAPS_WORD}(?:[ \t]+{_CAPS_WORD}){{1,3}}(?=[ \t]+is[ \t]+an?\b)",
            0.6,
        ),
        case_pattern(
            "TITLED_NAME",
            "name after a cue",
            rf"(?<=\b(?:{_PERSON_CUE})\b,?(?:[ \t]+|[ \t]*\n[ \t]*)){_NOT_A_NAME}"
            rf"(?:{_NAME_WORD},[ \t]*{_NAME_WORD}|{name})",
            0.5,
        ),
        case_pattern(
            "TITLED_NAME",
            "name in brackets after a conversation verb",  # "discussed with cardiology (Zeynep Rezaei)"
            rf"(?<=\b(?i:discussed|spoke|talked|consulted|called|paged|d/w)\b[^.\n()]{{0,60}}\([ \t]*(?:{_TITLE}[ \t]*)?)"
            rf"(?:{_INITIAL}|{_NAME_WORD}[ \t]+){PARTICLES}{_NAME_WORD}(?=[ \t]*\))",
            0.6,
        ),
        case_pattern(
            "TITLED_NAME",
            "name introducing oneself",
            rf"(?<=\b{_SELF_CUE}[ \t]+){_NOT_A_NAME}{_ANY_NAME_WORD}{_MORE_NAME_WORDS}",
            0.5,
        ),
        case_pattern(
            "TITLED_NAME",
            ROLE_RECOGNIZER,
            rf"(?<=(?:^|\||[ \t]{{2}})[ \t]*{_ROLE_LABEL}[ \t]*[:#|-]?[ \t]+)"
            rf"(?:{_NAME_WORD}(?:[ ]{_NAME_WORD})?,[ \t]*(?!{CREDENTIAL}){_GIVEN}(?:[ ]{_NAME_WORD})?"
            rf"|{_NAME_WORD}(?:[ ](?:{PARTICLE}[ ]|St\.[ ]?)*{_NAME_WORD}){{0,3}})\b(?!:)",
            0.6,
        ),
        case_pattern(
            "COMMA_NAME",
            "surname, given name",
            rf"(?<![\w.])(?:{_SURNAME}),[ \t]*(?!{CREDENTIAL}){_GIVEN}\b{middle}(?![ \t]*:)",
            0.5,
        ),
        case_pattern(
            "COMMA_NAME",
            "SURNAME, GIVEN in capitals",
            # particles and "ST." before the surname: "DE LA CRUZ, THANH", "ST. PIERRE, LEILA"
            rf"\b(?:ST\.[ \t]*)?{_CAPS_WORD}(?:[ \t]+{_CAPS_WORD}){{0,2}},[ \t]*{_CAPS_WORD}(?:[ \t]+{_CAPS_WORD})?\b"
            r"(?![ \t]*:)(?<=(?:\p{L}[^\p{L}]*){8})",
            0.5,
        ),
        case_pattern(
            "ADDRESS",
            "town after a facility",
            rf"(?<=\b(?:{FACILITY_HEAD}|Clinic)[ \t]+(?i:in|at)[ \t]+)"
            r"\p{Lu}[\p{L}'’-]+(?:[ \t]+(?:\p{Lu}|d['’])[\p{L}'’-]+){0,2}",
            0.5,
        ),
        case_pattern(
            "TITLED_NAME",
            "name before a credential",
            rf"(?<![\p{{L}}.'’-])(?!{CREDENTIAL})(?:{_SURNAME},[ \t]*{_NAME_WORD}(?:[ \t]+\p{{Lu}}\.?)?|{name})"
            rf"(?=,?[ \t]+{CREDENTIAL}(?![ \t]*:))",
            0.6,
        ),
        case_pattern(
            "AGED_NAME",
            "name before an age",
            rf"{WORD_START}(?:{_CAPS_WORD}|{_NAME_WORD})(?:[ \t]+{PARTICLES}(?:{_CAPS_WORD}|{_NAME_WORD})){{1,3}}"
            r"(?=,[ \t]+(?:an?[ \t]+)?(?:\d{1,3}|(?i:\p{L}+ty(?:-\p{L}+)?|one[ \t]+hundred))[ \t-]*"
            r"(?i:y/o|y\.o\.|yo|years?|yrs?|[mf])\b|,[ \t]+(?i:woman|man|male|female|boy|girl)\b)",
            0.6,
        ),
        case_pattern(
            "ADDRESS",
            "street name without a number",
            rf"(?<=\b(?i:on|off|along|near|onto|at)[ \t]+)(?:{_CAP}[ \t]+){{1,3}}"
            r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Way|Terrace|Court|Ct|Place|Parkway|"
            r"Pkwy|Highway|Hwy|Circle)\b\.?",
            0.6,
        ),
        case_pattern(
            "FACILITY_LINE",
            "facility named on a letterhead or under a signature",
            # a short line of capitalised words among a note's first three lines, or on the line after a
            # signer's credential ("Sincerely, A. Rao, MD\nBellevue"), optionally with a unit after a dash
            rf"(?:(?<=\A(?:[^\n]*\n){{0,2}}[ \t]*)|(?<={CREDENTIAL}[ \t]*\n[ \t]*))"
            rf"(?:(?:St\.?|Mount|Mt\.?)[ \t]+)?{_NAME_WORD}(?:[ \t]+(?:(?:of|and|&|the|on)[ \t]+)?{_NAME_WORD}){{0,4}}"
            # or before a unit or a theatre ("Brookhaven 4 West", "Sentara Leigh OR 5")
            r"(?=[ \t]*$|[ \t]+[-–—][ \t]+\S|[ \t]+\d{1,2}[ \t]?(?:West|East|North|South|[NSEW])\b"
            r"|[ \t]+(?:OR|Room|Rm|Bay|Pod|Suite)[ \t]*\#?\d)",
            0.5,
        ),
        *_lower_case_names(),
    ]


def _lower_case_names() -> list[EntityRecognizer]:
    """Names typed in lower case after a cue or before a credential ("husband wei chen", "-- jelena
    melnyk, LPN"): the span takes every lower-case word there, and the analyser keeps only the run of
    words that are not English words (:func:`client_agent.deid_filters.lower_case_name`)."""
    words = r"\p{Ll}[\p{Ll}'’-]+(?:[ \t]+\p{Ll}[\p{Ll}'’-]+){0,3}"
    relation = (
        r"daughter|son|wife|husband|niece|nephew|mother|father|sister|brother|caregiver|partner|spouse|"
        r"grandson|granddaughter|grandmother|grandfather|aunt|uncle|cousin|friend|neighbou?r|"
        r"(?:case|care)[ \t]+manager|coordinator|social[ \t]+worker|pharmacist|navigator|"
        r"dr\.?|np|nurse[ \t]+practitioner|mrs?\.?|ms\.?|mom|mum|dad|grandma|grandpa|nana|granny|papa|auntie"
    )
    # a patient introducing themself in a message: after a greeting, since "it's"/"i'm" alone are more
    # often followed by a noun ("i'm gonna", "it's effectiveness") than by a name
    self_intro = (
        r"(?:hi|hey|hello|hiya|morning|evening|sorry(?:[ \t]+to[ \t]+bother(?:[ \t]+you)?)?)\b[ \t,!.-]*"
        r"(?:it['’]?s|its|this[ \t]+is|i['’]?m|im|i[ \t]+am)"
        r"|my[ \t]+name[ \t]+is"
    )
    # a field whose value is a person ("Re: amara abdi, DOB ...", "Patient: ioana kim, MRN ...")
    field = (
        r"re|patient|pt|name|patient[ \t]+name|prescriber|prescribed[ \t]+by|from|to|attending|surgeon|"
        r"assistant|anesthesia|anesthesiologist|ordering(?:[ \t]+(?:physician|provider))?|provider|"
        r"physician|nurse|rn|np|resident|pcp|author|signed(?:[ \t]+by)?|decedent|deceased|client"
    )
    return [
        case_pattern(
            "LOWER_NAME_AFTER",
            "lower-case name after a cue",
            # and a patient introducing themself in a message ("hi, it's dolores ...")
            rf"(?<=\b(?i:{relation}|thanks|thank[ \t]+you|love(?=,)|xoxo|{self_intro})"
            rf",?[ \t]+){words}",
            0.5,
        ),
        # after "pt" a lone lower-case word is more often clinical shorthand than a name: two at least
        case_pattern(
            "LOWER_NAME_PT", "lower-case name after pt", rf"(?<=\b(?i:pt|patient)[ \t]+){words}", 0.5
        ),
        case_pattern(
            "LOWER_NAME_FIELD", "lower-case name in a field", rf"(?<=\b(?i:{field})[ \t]*:[ \t]*){words}", 0.5
        ),
        case_pattern(
            "LOWER_NAME_BEFORE",
            "lower-case name before a credential",
            rf"{WORD_START}{words}(?=,?[ \t]+{CREDENTIAL}(?![ \t]*:))",
            0.5,
        ),
    ]
