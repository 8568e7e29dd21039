"""A third, held-out set of synthetic clinical notes with planted identifiers and their exact spans.

Written before reading the de-identifier or the two older generators (`tests/deid_notes.py`,
`tests/deid_notes_independent.py`), from knowledge of how US clinical notes are written: discharge
summaries, SOAP progress notes, referral letters, nursing notes, lab and radiology reports, telephone
encounters, ED triage, operative notes, social-work notes and patient-portal messages. Its purpose is an
honest recall figure on notes the de-identifier was not fitted to; it must not be edited to suit the
de-identifier.

Every HIPAA Safe Harbor identifier that can appear in text is planted (`KINDS`): names of patients,
relatives and clinicians; facility names; street addresses, cities/towns/counties and ZIP codes; every
element of a date except the year; ages over 89; phone and fax numbers; e-mail addresses; SSNs; medical
record, account, health-plan, licence, device and vehicle numbers; URLs and IP addresses. Each planted
span covers the identifier itself, not its label or title ("Dr. " and "MRN: " stay outside the span).

The notes also carry what a de-identifier must *keep*: years on their own, ages under 90, times of day,
vital signs and lab values written like dates or phone numbers (BP 132/84, 5/5 strength, 2/6 murmur),
doses, scores and eponyms (Parkinson's disease, Foley catheter, Glasgow Coma Scale), generic
departments (the emergency department, 4 West). A redaction over any of those counts against precision.
"""

import datetime as dt
import random
from dataclasses import dataclass

from tests.deid_heldout_pools import (
    ABROAD,
    COUNTIES,
    FACILITY_PLACE_WORDS,
    FACILITY_SAINTS,
    HOSPITAL_SUFFIXES,
    NAMED_FACILITIES,
    ORIGINS,
    OTHER_FACILITY_SUFFIXES,
    STREET_NAMES,
    STREET_TYPES,
    US_PLACES,
    Origin,
)

# The planted kinds. Safe Harbor's geographic item is split into its three forms, and its "names" item
# covers patients, relatives and clinicians alike.
KINDS = (
    "NAME",
    "FACILITY",
    "STREET",
    "CITY",
    "ZIP",
    "DATE",
    "AGE",
    "PHONE",
    "FAX",
    "EMAIL",
    "SSN",
    "MRN",
    "ACCOUNT",
    "HEALTH_PLAN",
    "LICENSE",
    "DEVICE",
    "VEHICLE",
    "URL",
    "IP",
)

DEFAULT_SEED = 20261207
DEFAULT_COUNT = 240


@dataclass(frozen=True)
class PlantedSpan:
    start: int
    end: int
    kind: str
    text: str


@dataclass(frozen=True)
class HeldoutNote:
    genre: str
    text: str
    spans: tuple[PlantedSpan, ...]


@dataclass(frozen=True)
class _Phi:
    kind: str
    text: str


class _Writer:
    """Appends plain text and identifiers, recording each identifier's character span."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._spans: list[PlantedSpan] = []
        self._length = 0

    def __call__(self, *parts: "str | _Phi") -> None:
        for part in parts:
            if isinstance(part, _Phi):
                self._spans.append(
                    PlantedSpan(self._length, self._length + len(part.text), part.kind, part.text)
                )
                text = part.text
            else:
                text = part
            self._chunks.append(text)
            self._length += len(text)

    def line(self, *parts: "str | _Phi") -> None:
        self(*parts, "\n")

    def note(self, genre: str) -> HeldoutNote:
        return HeldoutNote(genre, "".join(self._chunks), tuple(self._spans))


# --- people -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    given: str
    family: str
    middle_initial: str
    female: bool
    family_first: bool

    @property
    def natural(self) -> str:
        """The name in the order its bearer writes it (family first for Chinese and Vietnamese names)."""
        if self.family_first:
            return f"{self.family} {self.given}"
        return f"{self.given} {self.family}"

    @property
    def western(self) -> str:
        return f"{self.given} {self.family}"


def _person(rng: random.Random, *, female: bool | None = None) -> _Person:
    origin: Origin = rng.choice(ORIGINS)
    if female is None:
        female = rng.random() < 0.5
    given = rng.choice(origin.female if female else origin.male)
    family = rng.choice(origin.family)
    if origin.name == "hispanic" and rng.random() < 0.4:
        second = rng.choice(origin.family)
        if second != family and " " not in family:
            family = f"{family} {second}"
    elif rng.random() < 0.08:
        other = rng.choice(rng.choice(ORIGINS).family)
        if " " not in other and " " not in family and other != family:
            family = f"{family}-{other}"
    family_first = origin.family_first and rng.random() < 0.6
    initial = rng.choice("ABCDEFGHJKLMNPRSTW") if rng.random() < 0.25 and not family_first else ""
    return _Person(given, family, initial, female, family_first)


def _patient_forms(rng: random.Random, p: _Person) -> str:
    """A patient's full name as a registration header or a note's first line writes it."""
    form = rng.random()
    if form < 0.35:
        mid = f" {p.middle_initial}." if p.middle_initial else ""
        return f"{p.family}, {p.given}{mid}"
    if form < 0.55:
        return f"{p.family.upper()}, {p.given.upper()}"
    if form < 0.85:
        mid = f" {p.middle_initial}." if p.middle_initial else ""
        return f"{p.given}{mid} {p.family}" if not p.family_first else p.natural
    return p.natural.upper()


def _title(p: _Person) -> str:
    return "Ms." if p.female else "Mr."


def _casual(rng: random.Random, text: str) -> str:
    """Nursing and phone notes are sometimes typed all in lower case."""
    return text.lower() if rng.random() < 0.5 else text


# --- places -------------------------------------------------------------------------------------------


def _facility(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(NAMED_FACILITIES)
    if roll < 0.4:
        return f"{rng.choice(FACILITY_SAINTS)} {rng.choice(HOSPITAL_SUFFIXES)}"
    if roll < 0.55:
        return f"{rng.choice(ORIGINS[-1].family)} {rng.choice(('Memorial Hospital', 'Family Practice', 'Clinic'))}"
    if roll < 0.65:
        city = rng.choice(US_PLACES)[0]
        return f"{city} {rng.choice(HOSPITAL_SUFFIXES + OTHER_FACILITY_SUFFIXES)}"
    suffixes = HOSPITAL_SUFFIXES if rng.random() < 0.5 else OTHER_FACILITY_SUFFIXES
    return f"{rng.choice(FACILITY_PLACE_WORDS)} {rng.choice(suffixes)}"


def _acronym(facility: str) -> str:
    letters = [w[0] for w in facility.replace("-", " ").split() if w[0].isupper()]
    return "".join(letters)


@dataclass(frozen=True)
class _Address:
    street: str
    city: str
    state: str
    zip_code: str


def _address(rng: random.Random) -> _Address:
    city, state, prefix = rng.choice(US_PLACES)
    roll = rng.random()
    if roll < 0.12:
        street = f"{rng.choice(('P.O. Box', 'PO Box', 'P O Box'))} {rng.randint(10, 9999)}"
    else:
        direction = rng.choice(("", "", "", "N. ", "West ", "S ", "E. "))
        street = f"{rng.randint(2, 9899)} {direction}{rng.choice(STREET_NAMES)} {rng.choice(STREET_TYPES)}"
        unit = rng.random()
        if unit < 0.15:
            street += f", Apt {rng.randint(1, 40)}{rng.choice('ABCD')}"
        elif unit < 0.25:
            street += f" #{rng.randint(1, 300)}"
        elif unit < 0.3:
            street += f", Unit {rng.randint(1, 90)}"
    zip_code = f"{prefix}{rng.randint(0, 99):02d}"
    if rng.random() < 0.25:
        zip_code += f"-{rng.randint(0, 9999):04d}"
    return _Address(street, city, state, zip_code)


# --- dates and ages -----------------------------------------------------------------------------------

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec")


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _date(rng: random.Random, d: dt.date, *, with_year: bool = True) -> str:
    """One of the forms dates take in notes; `with_year=False` gives the forms without a year."""
    m, day, y = d.month, d.day, d.year
    long, abbr = _MONTHS[m - 1], _MONTH_ABBR[m - 1]
    if not with_year:
        forms = (
            f"{m}/{day}",
            f"{long} {day}",
            f"{abbr} {day}",
            f"{abbr}. {day}",
            f"{_ordinal(day)} of {long}",
            f"{long} {_ordinal(day)}",
            f"{day} {abbr}",
            f"{m:02d}/{day:02d}",
        )
        return rng.choice(forms)
    forms = (
        f"{m:02d}/{day:02d}/{y}",
        f"{m}/{day}/{y}",
        f"{m}/{day}/{y % 100:02d}",
        f"{y}-{m:02d}-{day:02d}",
        f"{long} {day}, {y}",
        f"{day} {long} {y}",
        f"{abbr} {day}, {y}",
        f"{day}-{abbr}-{y}",
        f"{long.upper()} {day}, {y}",
        f"{m:02d}-{day:02d}-{y}",
        f"{m}.{day}.{y}",
        f"{day:02d}{abbr.upper()}{y}",
        f"{long} {_ordinal(day)}, {y}",
        f"{abbr}. {day} {y}",
    )
    return rng.choice(forms)


def _month_year(rng: random.Random, d: dt.date) -> str:
    return rng.choice(
        (f"{_MONTHS[d.month - 1]} {d.year}", f"{_MONTH_ABBR[d.month - 1]} {d.year}", f"{d.month}/{d.year}")
    )


_ONES = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _age_words(n: int) -> str:
    if n >= 100:
        rest = n - 100
        return "one hundred" + (f" {_ONES[rest]}" if 0 < rest < 10 else "")
    tens = ("ninety", "eighty", "seventy", "sixty", "fifty", "forty", "thirty", "twenty")[9 - n // 10]
    return tens + (f"-{_ONES[n % 10]}" if n % 10 else "")


def _age_phrase(rng: random.Random, age: int, w: _Writer, *, sex: str) -> None:
    """Writes an age in one of its usual forms; only ages over 89 are identifiers (Safe Harbor)."""
    number = _age_words(age) if age >= 20 and rng.random() < 0.12 else str(age)
    part: str | _Phi = _Phi("AGE", number) if age > 89 else number
    form = rng.randrange(8)
    noun = "woman" if sex == "F" else "man"
    if form == 0:
        w(part, f"-year-old {noun}")
    elif form == 1:
        w(part, f" y/o {sex}")
    elif form == 2:
        w(part, f"yo {sex}")
    elif form == 3:
        w("age ", part, f", {sex.lower() if rng.random() < 0.5 else sex}")
    elif form == 4:
        w(part, sex)
    elif form == 5:
        w(part, f" year old {noun}")
    elif form == 6:
        w(f"{noun} aged ", part)
    else:
        w(part, f" yo {noun}")


# --- numbers ------------------------------------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _phone(rng: random.Random) -> str:
    area = rng.choice(("617", "508", "781", "978", "312", "415", "713", "212", "404", "559", "216", "857"))
    exchange = f"{rng.randint(2, 9)}{_digits(rng, 2)}"
    line = _digits(rng, 4)
    forms = (
        f"({area}) {exchange}-{line}",
        f"{area}-{exchange}-{line}",
        f"{area}.{exchange}.{line}",
        f"+1 {area} {exchange} {line}",
        f"{area} {exchange} {line}",
        f"1-{area}-{exchange}-{line}",
        f"({area}){exchange}-{line}",
        f"{exchange}-{line}",
        f"+1-{area}-{exchange}-{line}",
    )
    return rng.choice(forms)


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    sep = rng.choice(("-", "-", " ", ""))
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def _mrn(rng: random.Random) -> str:
    return rng.choice(
        (
            _digits(rng, 7),
            _digits(rng, 8),
            "00" + _digits(rng, 6),
            f"{rng.choice('AEMZ')}{_digits(rng, 7)}",
            f"{_digits(rng, 3)}-{_digits(rng, 2)}-{_digits(rng, 2)}",
            f"MR{_digits(rng, 6)}",
        )
    )


def _account(rng: random.Random) -> str:
    return rng.choice(
        (
            _digits(rng, 10),
            f"V{_digits(rng, 9)}",
            f"{_digits(rng, 4)}-{_digits(rng, 6)}",
            f"ENC{_digits(rng, 8)}",
            f"9{_digits(rng, 11)}",
        )
    )


def _mbi(rng: random.Random) -> str:
    # Medicare Beneficiary Identifier: C A AN N A AN N A A N N, letters excluding S L O I B Z
    letters = "ACDEFGHJKMNPQRTUVWXY"
    alnum = letters + "0123456789"
    c = [
        str(rng.randint(1, 9)),
        rng.choice(letters),
        rng.choice(alnum),
        str(rng.randint(0, 9)),
        rng.choice(letters),
        rng.choice(alnum),
        str(rng.randint(0, 9)),
        rng.choice(letters),
        rng.choice(letters),
        str(rng.randint(0, 9)),
        str(rng.randint(0, 9)),
    ]
    s = "".join(c)
    return f"{s[:4]}-{s[4:7]}-{s[7:]}" if rng.random() < 0.5 else s


def _health_plan(rng: random.Random) -> tuple[str, str]:
    """(label, number) of a health-plan beneficiary number."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    roll = rng.randrange(5)
    if roll == 0:
        return rng.choice(("Medicare MBI", "Medicare ID", "Medicare #")), _mbi(rng)
    if roll == 1:
        return rng.choice(("MassHealth ID", "Medicaid ID", "Medi-Cal #")), _digits(rng, 9) + rng.choice(
            ("", "A")
        )
    if roll == 2:
        prefix = "".join(rng.choice(letters) for _ in range(3))
        return rng.choice(("BCBS Member ID", "Member ID", "Subscriber ID")), f"{prefix}{_digits(rng, 9)}"
    if roll == 3:
        return rng.choice(
            ("Policy #", "Policy No.", "Insurance ID")
        ), f"{_digits(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 3)}"
    return rng.choice(("Aetna ID", "UHC member #", "Tricare ID")), f"W{_digits(rng, 8)}"


def _licence(rng: random.Random) -> tuple[str, str]:
    roll = rng.randrange(5)
    if roll == 0:
        return "Driver's license", f"S{_digits(rng, 8)}"
    if roll == 1:
        return rng.choice(
            ("DL#", "Driver license #", "Lic. no.")
        ), f"{rng.choice('ABDFKMS')}{_digits(rng, 3)}-{_digits(rng, 4)}-{_digits(rng, 4)}"
    if roll == 2:
        return "DEA #", f"{rng.choice('ABFM')}{rng.choice('BCDGHKLMPRW')}{_digits(rng, 7)}"
    if roll == 3:
        return "NPI", rng.choice("12") + _digits(rng, 9)
    return rng.choice(
        ("RN license #", "MA license no.", "State license")
    ), f"{rng.choice(('RN', 'MD', ''))}{_digits(rng, 6)}"


def _device(rng: random.Random) -> tuple[str, str, str]:
    """(device, label, serial)."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    device = rng.choice(
        (
            "dual-chamber pacemaker",
            "ICD",
            "insulin pump",
            "continuous glucose monitor",
            "left ventricular assist device",
            "cochlear implant",
            "spinal cord stimulator",
            "home BiPAP unit",
            "implantable loop recorder",
            "vagal nerve stimulator",
        )
    )
    label = rng.choice(("serial number", "SN", "S/N", "Serial #", "serial no.", "device ID", "UDI"))
    if label == "UDI":
        serial = f"(01){_digits(rng, 14)}(21){rng.choice(letters)}{_digits(rng, 6)}"
    else:
        serial = rng.choice(
            (
                f"{''.join(rng.choice(letters) for _ in range(3))}{_digits(rng, 6)}{rng.choice(letters)}",
                f"{_digits(rng, 2)}{rng.choice(letters)}-{_digits(rng, 5)}",
                f"{rng.choice(letters)}{rng.choice(letters)}{_digits(rng, 8)}",
            )
        )
    return device, label, serial


def _vin(rng: random.Random) -> str:
    chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return rng.choice(("1", "2", "3", "5", "J", "W")) + "".join(rng.choice(chars) for _ in range(16))


def _plate(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return rng.choice(
        (
            f"{rng.randint(1, 9)}{''.join(rng.choice(letters) for _ in range(3))}{_digits(rng, 3)}",
            f"{''.join(rng.choice(letters) for _ in range(3))} {_digits(rng, 4)}",
            f"{_digits(rng, 3)}-{''.join(rng.choice(letters) for _ in range(2))}{_digits(rng, 1)}",
        )
    )


def _email(rng: random.Random, p: _Person) -> str:
    given = "".join(ch for ch in p.given.lower() if ch.isascii() and ch.isalpha())
    family = "".join(ch for ch in p.family.lower() if ch.isascii() and ch.isalpha())
    user = rng.choice(
        (
            f"{given}.{family}",
            f"{given[:1]}{family}{rng.randint(1, 99)}",
            f"{family}_{given}",
            f"{given}{rng.randint(1950, 2005)}",
            f"{given}+portal",
        )
    )
    domain = rng.choice(
        (
            "gmail.com",
            "yahoo.com",
            "outlook.com",
            "comcast.net",
            "icloud.com",
            "proton.me",
            "hotmail.co.uk",
            "aol.com",
        )
    )
    return f"{user}@{domain}"


def _clinician_email(rng: random.Random, p: _Person, facility: str) -> str:
    family = "".join(ch for ch in p.family.lower() if ch.isascii() and ch.isalpha())
    org = "".join(ch for ch in _acronym(facility).lower() if ch.isalpha()) or "clinic"
    return f"{p.given[:1].lower()}{family}@{org}{rng.choice(('.org', '.health', '-med.org', '.edu'))}"


def _url(rng: random.Random, p: _Person, facility: str) -> str:
    org = "".join(ch for ch in _acronym(facility).lower() if ch.isalpha()) or "care"
    slug = "".join(ch for ch in p.given.lower() if ch.isascii() and ch.isalpha())
    return rng.choice(
        (
            f"https://mychart.{org}health.org/MyChart/Visit/{_digits(rng, 6)}",
            f"www.gofundme.com/f/help-{slug}-recover",
            f"https://portal.{org}.org/patients/{_digits(rng, 7)}",
            f"http://www.facebook.com/{slug}.{_digits(rng, 3)}",
            f"https://telehealth.{org}.org/join?room={_digits(rng, 9)}",
            f"{org}-imaging.com/share/{''.join(rng.choice('abcdef0123456789') for _ in range(12))}",
        )
    )


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return f"2001:db8:{rng.randint(0, 65535):x}:{rng.randint(0, 65535):x}::{rng.randint(1, 65535):x}"
    first = rng.choice((10, 73, 98, 172, 192, 24, 66, 108))
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


# --- the case behind a note ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Case:
    patient: _Person
    sex: str
    age: int
    dob: dt.date
    admitted: dt.date
    relative: _Person
    relation: str
    clinicians: tuple[_Person, ...]
    facility: str
    other_facility: str
    address: _Address
    mrn: str


def _case(rng: random.Random) -> _Case:
    female = rng.random() < 0.5
    patient = _person(rng, female=female)
    age = rng.randint(90, 104) if rng.random() < 0.3 else rng.randint(19, 89)
    admitted = dt.date(2019, 1, 1) + dt.timedelta(days=rng.randint(0, 6 * 365))
    dob = admitted - dt.timedelta(days=age * 365 + rng.randint(10, 350))
    relation = rng.choice(
        (
            "daughter",
            "son",
            "wife",
            "husband",
            "sister",
            "brother",
            "niece",
            "grandson",
            "mother",
            "partner",
            "granddaughter",
            "nephew",
        )
    )
    rel_female = relation in ("daughter", "wife", "sister", "niece", "mother", "granddaughter")
    relative = _person(rng, female=rel_female)
    clinicians = tuple(_person(rng) for _ in range(3))
    return _Case(
        patient,
        "F" if female else "M",
        age,
        dob,
        admitted,
        relative,
        relation,
        clinicians,
        _facility(rng),
        _facility(rng),
        _address(rng),
        _mrn(rng),
    )


def _later(case: _Case, days: int) -> dt.date:
    return case.admitted + dt.timedelta(days=days)


def _dr(rng: random.Random, p: _Person) -> tuple[str, _Phi]:
    """A clinician as notes name them: a prefix outside the span and the name inside it."""
    roll = rng.randrange(6)
    if roll == 0:
        return "Dr. ", _Phi("NAME", p.family)
    if roll == 1:
        return "Dr ", _Phi("NAME", p.western)
    if roll == 2:
        return "", _Phi("NAME", f"{p.given[0]}. {p.family}")
    if roll == 3:
        return "Dr. ", _Phi("NAME", f"{p.given} {p.family}")
    if roll == 4:
        return "", _Phi("NAME", p.western)
    return "dr. ", _Phi("NAME", p.family.lower())


def _signature(rng: random.Random, w: _Writer, p: _Person) -> None:
    cred = rng.choice(("MD", "M.D.", "DO", "NP", "PA-C", "RN", "MD, PhD", "FNP-BC", "LICSW"))
    w.line("")
    w.line(
        "Electronically signed by ",
        _Phi("NAME", p.western),
        f", {cred}",
        " on ",
        _Phi("DATE", f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(2019, 2025)}"),
        f" {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
    )


def _distractors(rng: random.Random, w: _Writer) -> None:
    """Clinical text that looks like identifiers but is not one."""
    options = (
        f"BP {rng.randint(95, 170)}/{rng.randint(55, 100)}, HR {rng.randint(50, 120)}, RR {rng.randint(12, 24)}, "
        f"SpO2 {rng.randint(88, 100)}% on RA, T {rng.randint(96, 101)}.{rng.randint(0, 9)} F.",
        f"Strength 5/5 in upper extremities, 4/5 left hip flexion. {rng.choice(('2/6', '3/6'))} systolic murmur at RUSB.",
        f"Na {rng.randint(128, 146)}, K {rng.randint(3, 5)}.{rng.randint(0, 9)}, Cr {rng.randint(0, 3)}.{rng.randint(1, 9)}, "
        f"INR {rng.randint(1, 3)}.{rng.randint(0, 9)}, Hgb {rng.randint(7, 15)}.{rng.randint(0, 9)}.",
        f"History of Parkinson's disease and Crohn's disease; Foley catheter removed at {rng.randint(6, 11)}:00.",
        f"Glasgow Coma Scale 15. Wells score {rng.randint(0, 6)}. NYHA class {rng.choice(('II', 'III'))}, EF {rng.randint(20, 60)}%.",
        "Metoprolol tartrate 25 mg PO BID, apixaban 5 mg BID, acetaminophen 650 mg q6h PRN (max 3 g/day).",
        "Seen in the emergency department, then admitted to 4 West under the hospitalist service.",
        f"Colonoscopy in {rng.randint(2005, 2018)} was normal. Smoked 1 ppd x {rng.randint(10, 40)} years, quit in {rng.randint(1995, 2015)}.",
        f"Visual acuity 20/{rng.choice((20, 25, 40, 60))} OU. Hearing intact to whisper.",
        "Bell's palsy in the past; Hashimoto thyroiditis on levothyroxine 88 mcg daily.",
        f"Hospital day {rng.randint(2, 9)}. Follow up in {rng.randint(1, 6)} weeks with PCP. Call 911 if chest pain.",
        f"ICD-10 I50.22, E11.9. Lot #{_digits(rng, 5)} influenza vaccine given in the left deltoid.",
    )
    for text in rng.sample(options, rng.randint(1, 3)):
        w.line(text)


# --- genres -------------------------------------------------------------------------------------------


def _header(rng: random.Random, w: _Writer, case: _Case, title: str) -> None:
    w.line(_Phi("FACILITY", case.facility.upper() if rng.random() < 0.3 else case.facility))
    w.line(title)
    w.line(
        "Patient: ",
        _Phi("NAME", _patient_forms(rng, case.patient)),
        rng.choice(("    MRN: ", "  MR#: ", "   Med Rec #: ", "  Unit No. ")),
        _Phi("MRN", case.mrn),
    )
    w.line(
        rng.choice(("DOB: ", "Date of Birth: ", "D.O.B. ")),
        _Phi("DATE", _date(rng, case.dob)),
        f"    Sex: {case.sex}",
    )


def _discharge_summary(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    _header(rng, w, case, "DISCHARGE SUMMARY")
    out = _later(case, rng.randint(2, 12))
    w.line(
        "Admission Date: ",
        _Phi("DATE", _date(rng, case.admitted)),
        "    Discharge Date: ",
        _Phi("DATE", _date(rng, out)),
    )
    attending, pcp = case.clinicians[0], case.clinicians[1]
    prefix, name = _dr(rng, attending)
    w.line("Attending: ", prefix, name, "    PCP: ", _Phi("NAME", f"{pcp.given} {pcp.family}"), ", MD")
    w.line("")
    w("HISTORY OF PRESENT ILLNESS: ", _title(case.patient), " ", _Phi("NAME", case.patient.family), " is a ")
    _age_phrase(rng, case.age, w, sex=case.sex)
    w(
        " with a history of CHF and atrial fibrillation who presented to the ",
        _Phi("FACILITY", case.other_facility),
        " emergency department on ",
        _Phi("DATE", _date(rng, case.admitted, with_year=False)),
        " with dyspnea and was transferred here.\n",
    )
    _distractors(rng, w)
    w.line(
        "HOSPITAL COURSE: Diuresed with IV furosemide. On hospital day 3 ",
        _Phi("NAME", case.patient.given),
        " was able to walk with PT.",
    )
    w("DISPOSITION: Discharged to ")
    if rng.random() < 0.5:
        w(_Phi("FACILITY", f"{rng.choice(FACILITY_PLACE_WORDS)} {rng.choice(OTHER_FACILITY_SUFFIXES)}"), ".")
    else:
        w(
            "home at ",
            _Phi("STREET", case.address.street),
            ", ",
            _Phi("CITY", case.address.city),
            f", {case.address.state} ",
            _Phi("ZIP", case.address.zip_code),
            ", with ",
            case.relation,
            " ",
            _Phi("NAME", case.relative.western),
            ".",
        )
    w.line("")
    w.line(
        "Follow-up: Dr. ",
        _Phi("NAME", attending.family),
        " on ",
        _Phi("DATE", _date(rng, _later(case, 20))),
        " at 10:30 AM; clinic phone ",
        _Phi("PHONE", _phone(rng)),
        ", fax ",
        _Phi("FAX", _phone(rng)),
        ".",
    )
    _signature(rng, w, attending)
    return w.note("discharge_summary")


def _progress_note(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    day = _later(case, rng.randint(1, 5))
    w.line(
        rng.choice(("PROGRESS NOTE", "Hospitalist Progress Note", "Daily Progress Note - Medicine")),
        " - ",
        _Phi("DATE", _date(rng, day)),
    )
    w.line("Pt: ", _Phi("NAME", _patient_forms(rng, case.patient)), " (", _Phi("MRN", case.mrn), ")")
    w("S: ")
    if rng.random() < 0.5:
        w(_Phi("NAME", case.patient.given), " reports")
    else:
        w("Patient reports")
    w(
        " less shortness of breath overnight. ",
        case.relation.capitalize(),
        " ",
        _Phi("NAME", case.relative.given),
        " at bedside, asking about discharge.\n",
    )
    w("O: ")
    _distractors(rng, w)
    w("A/P: ")
    _age_phrase(rng, case.age, w, sex=case.sex)
    w(
        " with pneumonia, improving. Continue ceftriaxone through ",
        _Phi("DATE", _date(rng, _later(case, 6), with_year=False)),
        ". Discussed with ",
        _Phi("FACILITY", case.other_facility),
        " cardiology (",
    )
    prefix, name = _dr(rng, case.clinicians[2])
    w(prefix, name, ").\n")
    if rng.random() < 0.4:
        label, number = _health_plan(rng)
        w.line(
            "Case management: awaiting prior authorization, ", label, " ", _Phi("HEALTH_PLAN", number), "."
        )
    _signature(rng, w, case.clinicians[0])
    return w.note("progress_note")


def _referral_letter(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    sender, recipient = case.clinicians[0], case.clinicians[1]
    w.line(_Phi("FACILITY", case.facility))
    w.line(
        _Phi("STREET", f"{rng.randint(10, 2000)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_TYPES)}"),
        ", ",
        _Phi("CITY", rng.choice(US_PLACES)[0]),
        ", ",
        rng.choice(("MA", "NY", "CA")),
        " ",
        _Phi("ZIP", f"0{_digits(rng, 4)}"),
    )
    w.line("Tel ", _Phi("PHONE", _phone(rng)), " | Fax ", _Phi("FAX", _phone(rng)))
    w.line("")
    w.line(_Phi("DATE", _date(rng, case.admitted)))
    w.line("")
    w.line("Dear Dr. ", _Phi("NAME", recipient.family), ",")
    w.line("")
    w("Re: ", _Phi("NAME", case.patient.western), ", DOB ", _Phi("DATE", _date(rng, case.dob)))
    if rng.random() < 0.5:
        w(", SSN ", _Phi("SSN", _ssn(rng)))
    w("\n\n")
    w("Thank you for seeing this pleasant ")
    _age_phrase(rng, case.age, w, sex=case.sex)
    w(
        " whom I have followed since ",
        _Phi("DATE", _month_year(rng, _later(case, -rng.randint(400, 3000)))),
        " for progressive memory loss. ",
        "She" if case.sex == "F" else "He",
        " lives with ",
        "her" if case.sex == "F" else "his",
        f" {case.relation}, ",
        _Phi("NAME", case.relative.western),
        ", in ",
        _Phi("CITY", case.address.city),
        ", and moved from ",
        _Phi("CITY", rng.choice(ABROAD)),
        f" in {rng.randint(1975, 2015)}.\n",
    )
    _distractors(rng, w)
    w.line(
        "The family can be reached at ",
        _Phi("PHONE", _phone(rng)),
        " or ",
        _Phi("EMAIL", _email(rng, case.relative)),
        ".",
    )
    w.line("")
    w.line("Sincerely,")
    cred = rng.choice(("MD", "M.D.", "DO", "MBBS"))
    w.line(_Phi("NAME", sender.western), f", {cred}")
    if rng.random() < 0.5:
        label, number = _licence(rng)
        w.line(f"{label} ", _Phi("LICENSE", number))
    return w.note("referral_letter")


def _nursing_note(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    day = _later(case, rng.randint(0, 4))
    w.line(
        _Phi("DATE", _date(rng, day, with_year=rng.random() < 0.5)),
        f" {rng.randint(0, 23):02d}{rng.choice(('00', '30', '45'))} ",
        rng.choice(("Nursing note", "RN shift note", "NSG:")),
    )
    pt_given = _casual(rng, case.patient.given)
    if rng.random() < 0.6:
        w("pt ", _Phi("NAME", pt_given), " A&Ox3, ")
    else:
        w("pt A&Ox3, ")
    w(f"resting in bed, pain {rng.randint(0, 8)}/10. ")
    w("family at bedside: ", case.relation, " ", _Phi("NAME", _casual(rng, case.relative.western)), ". ")
    w("call bell in reach, bed alarm on.\n")
    _distractors(rng, w)
    if rng.random() < 0.5:
        w(
            _casual(rng, "Per report from "),
            _Phi("FACILITY", _casual(rng, case.other_facility)),
            ", pt had a fall there on ",
            _Phi("DATE", _date(rng, _later(case, -rng.randint(2, 30)), with_year=False)),
            ".\n",
        )
    if case.age > 89 and rng.random() < 0.6:
        w("pt is ", _Phi("AGE", str(case.age)), " and hard of hearing, speak slowly.\n")
    helper = case.clinicians[2]
    w("Dr ", _Phi("NAME", _casual(rng, helper.family)), " notified of BP, no new orders. ")
    w("pager ", _Phi("PHONE", f"{rng.randint(1, 9)}-{_digits(rng, 4)}"), ".\n")
    nurse = case.clinicians[1]
    w("-- ", _Phi("NAME", f"{nurse.given[0]}. {nurse.family}"), ", RN\n")
    return w.note("nursing_note")


def _lab_report(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    w.line(_Phi("FACILITY", case.facility), " - Clinical Laboratory")
    w.line("PATIENT NAME: ", _Phi("NAME", f"{case.patient.family.upper()}, {case.patient.given.upper()}"))
    w.line("MRN: ", _Phi("MRN", case.mrn), "   ACCT: ", _Phi("ACCOUNT", _account(rng)))
    w("AGE/SEX: ")
    w(
        _Phi("AGE", str(case.age)) if case.age > 89 else str(case.age),
        f"/{case.sex}   DOB: ",
        _Phi("DATE", _date(rng, case.dob)),
        "\n",
    )
    collected = _later(case, rng.randint(0, 3))
    w.line(
        "COLLECTED: ",
        _Phi("DATE", _date(rng, collected)),
        f" {rng.randint(5, 11):02d}:{rng.randint(0, 59):02d}",
        "   RECEIVED: ",
        _Phi("DATE", _date(rng, collected)),
        f" {rng.randint(12, 16):02d}:{rng.randint(0, 59):02d}",
    )
    prefix, name = _dr(rng, case.clinicians[0])
    w.line("ORDERING: ", prefix, name)
    w.line("")
    w.line(f"WBC      {rng.randint(3, 18)}.{rng.randint(0, 9)}   K/uL    (4.0-11.0)")
    w.line(f"HGB      {rng.randint(7, 16)}.{rng.randint(0, 9)}   g/dL    (12.0-16.0)")
    w.line(f"PLT      {rng.randint(90, 420)}     K/uL    (150-400)")
    w.line(f"TSH      {rng.randint(0, 6)}.{rng.randint(10, 99)}  mIU/L   (0.45-4.50)")
    w.line("")
    w.line(
        "Critical value called to ",
        _Phi("NAME", case.clinicians[1].western),
        ", RN at ",
        f"{rng.randint(10, 23)}:{rng.randint(10, 59)}",
        " on ",
        _Phi("DATE", _date(rng, collected, with_year=False)),
        ", read back verified.",
    )
    w.line("Results also available at ", _Phi("URL", _url(rng, case.patient, case.facility)))
    return w.note("lab_report")


def _telephone_note(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    w.line("TELEPHONE ENCOUNTER  ", _Phi("DATE", _date(rng, case.admitted)))
    caller_is_relative = rng.random() < 0.6
    if caller_is_relative:
        w(
            "Call from pt's ",
            case.relation,
            ", ",
            _Phi("NAME", _casual(rng, case.relative.western)),
            ", at ",
            _Phi("PHONE", _phone(rng)),
            ". ",
        )
    else:
        w(
            "Pt ",
            _Phi("NAME", _casual(rng, case.patient.western)),
            " called from ",
            _Phi("PHONE", _phone(rng)),
            ". ",
        )
    w("Identity verified with DOB ", _Phi("DATE", _date(rng, case.dob)))
    if rng.random() < 0.5:
        w(" and SSN ", _Phi("SSN", _ssn(rng)))
    w(".\n")
    w(
        "Reports ",
        "her" if case.sex == "F" else "his",
        " ",
        rng.choice(("mother", "father", "husband", "wife")),
        " is confused since ",
        _Phi("DATE", _date(rng, _later(case, -2), with_year=False)),
        ". ",
    )
    w("Advised to go to the ED at ", _Phi("FACILITY", _casual(rng, case.other_facility)), ". ")
    w("Will fax records to ", _Phi("FAX", _phone(rng)), ".\n")
    if rng.random() < 0.5:
        w.line(
            "Pharmacy on file: ",
            _Phi("FACILITY", f"{rng.choice(FACILITY_PLACE_WORDS)} Pharmacy"),
            ", ",
            _Phi("STREET", f"{rng.randint(2, 999)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_TYPES)}"),
            ", ",
            _Phi("CITY", rng.choice(US_PLACES)[0]),
        )
    w.line("Call back number confirmed. -- ", _Phi("NAME", _casual(rng, case.clinicians[2].western)), ", LPN")
    return w.note("telephone_note")


def _ed_triage(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    w.line(
        "ED TRIAGE - ",
        _Phi("FACILITY", case.facility),
        " - ",
        _Phi("DATE", _date(rng, case.admitted)),
        f" {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
    )
    w("CC: MVC. ")
    w(
        _Phi("NAME", case.patient.western)
        if rng.random() < 0.5
        else _Phi("NAME", case.patient.natural.upper()),
        ", ",
    )
    _age_phrase(rng, case.age, w, sex=case.sex)
    w(
        ", restrained driver of a ",
        f"{rng.randint(2005, 2023)} ",
        rng.choice(("Honda Civic", "Toyota Camry", "Ford F-150", "Nissan Altima", "Hyundai Elantra")),
    )
    w(
        ", plate ",
        _Phi("VEHICLE", _plate(rng)),
        ", VIN ",
        _Phi("VEHICLE", _vin(rng)),
        ", rear-ended at low speed on ",
        _Phi("STREET", f"{rng.choice(STREET_NAMES)} {rng.choice(('St', 'Ave', 'Rd'))}"),
        " in ",
        _Phi("CITY", case.address.city),
        ".\n",
    )
    w(
        "Brought in by ",
        rng.choice(("EMS", "fire rescue", "private vehicle")),
        "; triaged by ",
        _Phi("NAME", case.clinicians[2].western),
        ", RN.\n",
    )
    _distractors(rng, w)
    w(
        "Emergency contact: ",
        _Phi("NAME", case.relative.western),
        f" ({case.relation}) ",
        _Phi("PHONE", _phone(rng)),
        "\n",
    )
    label, number = _health_plan(rng)
    w.line(
        "Insurance: ", label, " ", _Phi("HEALTH_PLAN", number), "   Acct #: ", _Phi("ACCOUNT", _account(rng))
    )
    return w.note("ed_triage")


def _radiology_report(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    w.line("RADIOLOGY REPORT - ", _Phi("FACILITY", case.facility))
    w.line(
        "Name: ",
        _Phi("NAME", _patient_forms(rng, case.patient)),
        "   MRN ",
        _Phi("MRN", case.mrn),
        "   Accession: ",
        _Phi("ACCOUNT", f"RAD{_digits(rng, 8)}"),
    )
    exam = _later(case, rng.randint(0, 3))
    w.line("EXAM: CT chest with contrast   DATE: ", _Phi("DATE", _date(rng, exam)))
    w.line(
        "COMPARISON: Outside study from ",
        _Phi("FACILITY", case.other_facility),
        " dated ",
        _Phi("DATE", _date(rng, _later(case, -rng.randint(30, 700)))),
        ".",
    )
    w.line("FINDINGS: 6 mm nodule RLL (series 3, image 45). No effusion. Pacer leads in RA/RV.")
    if rng.random() < 0.6:
        device, label, serial = _device(rng)
        w.line(f"Per MRI safety screen: {device} ", f"{label} ", _Phi("DEVICE", serial), ", MR-conditional.")
    w.line("IMPRESSION: Fleischner follow-up CT in 6-12 months.")
    w.line("Images viewed on workstation ", _Phi("IP", _ip(rng)), ".")
    prefix, name = _dr(rng, case.clinicians[0])
    w.line("Dictated by: ", prefix, name, "   Transcribed: ", _Phi("DATE", _date(rng, exam, with_year=False)))
    return w.note("radiology_report")


def _operative_note(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    w.line("OPERATIVE REPORT")
    w.line(
        "Patient: ",
        _Phi("NAME", _patient_forms(rng, case.patient)),
        "   Date of surgery: ",
        _Phi("DATE", _date(rng, _later(case, 1))),
    )
    surgeon, assistant, anesthetist = case.clinicians
    w.line(
        "Surgeon: ",
        _Phi("NAME", surgeon.western),
        ", MD   Assistant: ",
        _Phi("NAME", assistant.western),
        ", PA-C   Anesthesia: ",
        _Phi("NAME", f"{anesthetist.given[0]}. {anesthetist.family}"),
        ", CRNA",
    )
    w.line("PROCEDURE: Dual-chamber pacemaker implantation, left subclavian approach.")
    device, label, serial = _device(rng)
    w.line(
        f"IMPLANTS: {device}, model {rng.choice(('W1DR01', 'ADDRL1', 'EN1DR01'))}, ",
        f"{label} ",
        _Phi("DEVICE", serial),
        ".",
    )
    _distractors(rng, w)
    w("The patient, a ")
    _age_phrase(rng, case.age, w, sex=case.sex)
    w(", tolerated the procedure well and was taken to PACU. ")
    w(
        "Device clinic at ",
        _Phi("FACILITY", case.facility),
        " to follow; remote monitoring via ",
        _Phi("URL", _url(rng, case.patient, case.facility)),
        ".\n",
    )
    return w.note("operative_note")


def _social_work_note(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    w.line("SOCIAL WORK ASSESSMENT  ", _Phi("DATE", _date(rng, _later(case, 2))))
    w(
        "Met with ",
        _title(case.patient),
        " ",
        _Phi("NAME", case.patient.family),
        " and ",
        case.relation,
        " ",
        _Phi("NAME", case.relative.western),
        ". ",
    )
    w(
        "Pt lives alone at ",
        _Phi("STREET", case.address.street),
        ", ",
        _Phi("CITY", case.address.city),
        " ",
        _Phi("ZIP", case.address.zip_code),
        " in ",
        _Phi("CITY", rng.choice(COUNTIES)),
        ". ",
    )
    w(
        "Born in ",
        _Phi("CITY", rng.choice(ABROAD)),
        "; speaks ",
        rng.choice(
            (
                "Yoruba",
                "Cantonese",
                "Vietnamese",
                "Arabic",
                "Ukrainian",
                "Spanish",
                "Haitian Creole",
                "Bengali",
            )
        ),
        ".\n",
    )
    w("SSN on file: ", _Phi("SSN", _ssn(rng)), ". ")
    label, number = _health_plan(rng)
    w(f"Coverage: {label} ", _Phi("HEALTH_PLAN", number), ". ")
    label, number = _licence(rng)
    w("ID presented: ", label, " ", _Phi("LICENSE", number), ".\n")
    if rng.random() < 0.5:
        w(
            "Car (",
            rng.choice(("gray", "red", "white")),
            " sedan, plate ",
            _Phi("VEHICLE", _plate(rng)),
            ") left in the ED lot; ",
            case.relation,
            " will move it.\n",
        )
    w(
        "Referred to ",
        _Phi(
            "FACILITY",
            f"{rng.choice(FACILITY_PLACE_WORDS)} {rng.choice(('Senior Living', 'Adult Day Health', 'Home Care'))}",
        ),
        ", intake coordinator ",
        _Phi("NAME", case.clinicians[1].western),
        " at ",
        _Phi("PHONE", _phone(rng)),
        " or ",
        _Phi("EMAIL", _clinician_email(rng, case.clinicians[1], case.facility)),
        ".\n",
    )
    if rng.random() < 0.5:
        w.line("Fundraiser set up by family: ", _Phi("URL", _url(rng, case.patient, case.facility)))
    w("-- ", _Phi("NAME", case.clinicians[2].western), ", LICSW\n")
    return w.note("social_work_note")


def _portal_message(rng: random.Random, case: _Case) -> HeldoutNote:
    w = _Writer()
    sent = _later(case, rng.randint(5, 60))
    w.line(
        "Patient portal message received ",
        _Phi("DATE", _date(rng, sent)),
        f" {rng.randint(1, 12)}:{rng.randint(10, 59)} PM",
    )
    w.line("From: ", _Phi("NAME", case.patient.western), " <", _Phi("EMAIL", _email(rng, case.patient)), ">")
    w.line("Session IP: ", _Phi("IP", _ip(rng)))
    w.line("")
    prefix, name = _dr(rng, case.clinicians[0])
    w.line(
        "Hi ",
        prefix,
        name,
        ", my blood sugars have been in the 200s since ",
        _Phi("DATE", _date(rng, _later(case, rng.randint(0, 4)), with_year=False)),
        ". My new pump (",
        rng.choice(("Serial", "SN", "serial #")),
        " ",
        _Phi("DEVICE", _device(rng)[2]),
        ") keeps alarming. ",
    )
    w.line(
        "My ",
        case.relation,
        " ",
        _Phi("NAME", case.relative.given),
        " can bring me in. You can call me at ",
        _Phi("PHONE", _phone(rng)),
        ".",
    )
    w.line("Thanks, ", _Phi("NAME", _casual(rng, case.patient.given)))
    w.line("")
    w.line(
        "Reply: appointment made for ",
        _Phi("DATE", _date(rng, _later(case, 70), with_year=False)),
        " with ",
        _Phi("NAME", case.clinicians[1].western),
        ", CDE. Video link: ",
        _Phi("URL", _url(rng, case.patient, case.facility)),
    )
    return w.note("portal_message")


_GENRES = (
    _discharge_summary,
    _progress_note,
    _referral_letter,
    _nursing_note,
    _lab_report,
    _telephone_note,
    _ed_triage,
    _radiology_report,
    _operative_note,
    _social_work_note,
    _portal_message,
)


def heldout_notes(count: int = DEFAULT_COUNT, *, seed: int = DEFAULT_SEED) -> list[HeldoutNote]:
    """`count` notes, the genres in turn, each from its own case drawn from `random.Random(seed)`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    notes = [_GENRES[i % len(_GENRES)](rng, _case(rng)) for i in range(count)]
    for note in notes:
        for span in note.spans:
            if note.text[span.start : span.end] != span.text or span.kind not in KINDS:
                raise AssertionError(f"planted span {span} does not match its note")
    return notes
