"""A second generator of synthetic clinical notes with planted identifiers, for the adversarial review of
issue 24's de-identification (tests/adversarial/test_review_issue24_deid.py).

Written without reading tests/deid_notes.py or the finders' patterns, so that the recall it measures is not
the recall of patterns fitted to one author's templates. Eight note styles (discharge summary, nursing
note, referral letter, radiology header, a patient's portal message, a table of contacts, an ALL CAPS
transfer header, a lower-case chat between staff) plant every HIPAA Safe Harbor identifier type with its
exact span, and plant non-identifiers (drugs, eponyms, clinical words, "may" and "March" as words, years
alone, ages under 90) whose survival measures over-redaction. Names, cities and facilities are made up or
drawn from many origins; none was taken from a finder's list.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from client_agent.phi import PHIFinder


class Kind(StrEnum):
    """The Safe Harbor identifier a planted value stands for (45 CFR 164.514(b)(2)(i))."""

    NAME = "NAME"
    STREET_ADDRESS = "STREET_ADDRESS"
    CITY = "CITY"
    ZIP = "ZIP"
    FACILITY = "FACILITY"
    DATE = "DATE"
    AGE_OVER_89 = "AGE_OVER_89"
    PHONE = "PHONE"
    FAX = "FAX"
    EMAIL = "EMAIL"
    SSN = "SSN"
    MRN = "MRN"
    ACCOUNT = "ACCOUNT"
    HEALTH_PLAN = "HEALTH_PLAN"
    LICENCE = "LICENCE"
    VEHICLE = "VEHICLE"
    DEVICE = "DEVICE"
    URL = "URL"
    IP_ADDRESS = "IP_ADDRESS"


@dataclass(frozen=True)
class Planted:
    start: int
    end: int
    kind: Kind | None  # None: a non-identifier that must survive
    value: str


@dataclass
class Note:
    style: str
    text: str
    planted: list[Planted]


class _Writer:
    """Builds a note piece by piece, recording where each planted value lands."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.planted: list[Planted] = []

    def t(self, text: str) -> _Writer:
        self._parts.append(text)
        self._length += len(text)
        return self

    def p(self, kind: Kind | None, value: str) -> _Writer:
        self.planted.append(Planted(self._length, self._length + len(value), kind, value))
        return self.t(value)

    def age(self, parts: tuple[str, str, str], *, upper: bool = False) -> _Writer:
        before, value, after = (part.upper() if upper else part for part in parts)
        return self.t(before).p(Kind.AGE_OVER_89, value).t(after)

    def phone(self, kind: Kind, value: str) -> _Writer:
        """A number whose extension ("ext. 12", "x204") is written but not scored: alone it names no one."""
        number, sep, extension = value.partition(" ext. ") if " ext. " in value else value.partition(" x")
        return self.p(kind, number).t(sep + extension)

    def keep(self, value: str) -> _Writer:
        return self.p(None, value)

    def text(self) -> str:
        return "".join(self._parts)


# --- identifiers ------------------------------------------------------------------------------------------

# (given names, surnames) by origin; several given names are two words (Vietnamese middle names, Arabic).
_ORIGINS: dict[str, tuple[list[str], list[str]]] = {
    "vietnamese": (
        ["Thi Hoa", "Van Duc", "Minh Chau", "Thu Trang", "Quoc Bao", "Ngoc Lan", "Huu Phuoc"],
        ["Nguyen", "Tran", "Pham", "Le", "Vo", "Dang", "Huynh", "Bui"],
    ),
    "yoruba": (
        ["Adebayo", "Folasade", "Oluwaseun", "Temitope", "Babajide", "Yetunde", "Olamide", "Kehinde"],
        ["Ogunleye", "Adeyemi", "Bakare", "Olawale", "Akinola", "Oyelaran", "Fashola", "Adewumi"],
    ),
    "arabic": (
        ["Yousef", "Fatima Zahra", "Khalid", "Layla", "Abdulrahman", "Noor", "Tariq", "Huda"],
        ["Al-Haddad", "El Amrani", "bin Rashid", "Haddad", "Al-Qahtani", "Saadeh", "El-Masri", "Barakat"],
    ),
    "polish": (
        ["Grzegorz", "Agnieszka", "Krzysztof", "Małgorzata", "Wojciech", "Jadwiga", "Zbigniew"],
        ["Brzęczyszczykiewicz", "Wróblewska", "Zieliński", "Szczepańska", "Kowalczyk", "Wiśniewski"],
    ),
    "spanish": (
        ["María José", "Juan Pablo", "Itziar", "Guadalupe", "Xóchitl", "Rodrigo", "Inmaculada"],
        ["García-Márquez", "Fernández de la Cruz", "Ruiz Zafón", "Olmedo Baeza", "Villanueva Soto"],
    ),
    "irish": (
        ["Siobhan", "Pádraig", "Aoife", "Oisín", "Caoimhe", "Niamh", "Ruairí"],
        ["O'Donnell", "Mac Giolla Phádraig", "O'Sullivan-Reyes", "McGillycuddy", "Ní Bhriain", "D'Arcy"],
    ),
    "south_asian": (
        ["Venkatesh", "Priyanka", "Harjeet", "Sunita", "Rajendra", "Anjali", "Thiruvengadam"],
        ["Subramanian", "Chatterjee", "Gill", "Ramaswamy", "Venkataraghavan", "Deshpande"],
    ),
    "east_asian": (
        ["Ji-woo", "Wei", "Haruto", "Xiaoling", "Min-jun", "Yuki", "Zhiyuan"],
        ["Park", "Zhang", "Takahashi", "Ouyang", "Seo", "Nakamura", "Hwang"],
    ),
    "other": (
        ["Aroha", "Tsegaye", "Aino", "Kwabena", "Dagny", "Bongani", "Ilse", "Teodoro"],
        ["Ngata", "Bekele", "Virtanen", "Mensah", "Haugland", "Dlamini", "Vanderwoude", "Quispe"],
    ),
}

_STREETS = ["Willowmere", "Kestrel Hollow", "Old Quarry", "Tamarack", "Bellflower", "Juniper Ridge"]
_STREETS += ["Fenwick", "Cobblestone", "Larkspur", "Harrow", "Nightingale", "Saddleback"]
_STREET_TYPES = ["Lane", "Rd", "Street", "Ave", "Blvd", "Court", "Way", "Terrace", "Dr.", "Pike"]
_CITIES = ["Marlowe Springs", "Ashbury Falls", "Quenton", "Port Ellery", "Hollis Bend", "Cedar Hollow"]
_CITIES += ["Westbrook Junction", "Tillamook", "Eau Claire", "Yreka", "Kalispell", "Bemidji", "Opelousas"]
_CITIES += ["Watertown", "Natchitoches", "Lewiston", "Chillicothe", "Wahpeton", "Coeur d'Alene"]
_STATES = ["MN", "OR", "ME", "WI", "LA", "ND", "Ohio", "Idaho", "Montana", "VT"]
_FACILITIES = [
    "Riverbend Community Hospital",
    "Lakeshore Rehab Center",
    "Clinique Sainte-Anne",
    "St. Brigid's Hospice",
    "Holy Cross Nursing Home",
    "Mercy Valley Medical Center",
    "Ashgrove Family Practice",
    "Pinecrest Assisted Living",
    "Hôpital Saint-Luc",
    "Good Shepherd Home",
    "Northfield Urgent Care",
    "the Kellerman Clinic",
    "Bright Horizons Dialysis",
    "Cedar Hollow Memory Care",
    "Fairhaven Women's Health",
    "Ogunleye Pediatrics",
    "Tamarack Behavioral Health",
    "Our Lady of Lourdes Infirmary",
    "Harborview Skilled Nursing",
    "Westbrook VA Outpatient Clinic",
]
_FACILITIES_LOWER = ["riverbend", "lakeshore rehab", "st brigids", "the kellerman", "pinecrest", "harborview"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September"]
_MONTHS += ["October", "November", "December"]
_MON = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec"]
_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd", 21: "21st", 22: "22nd", 23: "23rd", 31: "31st"}
_TENS = {9: "ninety", 10: "one hundred"}
_UNITS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_DOMAINS = ["gmail.com", "yahoo.co.uk", "riverbend-health.org", "outlook.com", "proton.me", "mail.ru"]


def _ordinal(day: int) -> str:
    return _ORDINAL.get(day, f"{day}th")


def name(rng: random.Random, style: str | None = None) -> str:
    given, surnames = _ORIGINS[rng.choice(sorted(_ORIGINS))]
    first, last = rng.choice(given), rng.choice(surnames)
    style = style or rng.choice(["full", "full", "full", "last_first", "initials", "initial_last", "caps"])
    if style == "last_first":
        return f"{last}, {first}"
    if style == "initials":
        letters = "".join(w[0] for w in first.replace("-", " ").split())
        return f"{'. '.join(letters)}. {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
    if style == "initial_last":
        return f"{first[0]}. {last}"
    if style == "caps":
        return f"{last.upper()}, {first.upper()}"
    if style == "lower":
        return f"{first.lower()} {last.lower()}"
    if style == "first":
        return first
    return f"{first} {last}"


def date(rng: random.Random) -> str:
    year, month, day = rng.randint(2015, 2024), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{_ordinal(day)} of {_MONTHS[month - 1]}",
            f"{day:02d}.{month:02d}.{year}",
            f"{_MON[month - 1]}-{day}",
            f"{year}-{month:02d}-{day:02d}",
            f"{_MONTHS[month - 1]} {day}, {year}",
            f"{month}/{day}/{year % 100:02d}",
            f"{day} {_MON[month - 1]} {year}",
            f"{_MON[month - 1].upper()} {day:02d} {year}",
            f"{month}/{day}",
            f"{day}-{_MON[month - 1]}-{year}",
            f"{_MONTHS[month - 1]} {_ordinal(day)}",
            f"{year}{month:02d}{day:02d}",
        ]
    )


def age_over_89(rng: random.Random) -> tuple[str, str, str]:
    """An age over 89 as (text before, the age itself, text after): only the age is the identifier."""
    years = rng.randint(90, 104)
    tens, unit = divmod(years, 10)
    word = _TENS[tens] + ("" if not unit else ("-" if tens == 9 else " and ") + _UNITS[unit])
    return rng.choice(
        [
            ("", word, " y/o"),
            ("aged ", str(years), ""),
            ("", str(years), "yo"),
            ("", str(years), "-year-old"),
            ("", str(years), " years of age"),
            ("", word, "-year-old"),
            ("", str(years), " y.o."),
            ("", str(years), "F"),
            ("", str(years), " yrs"),
            ("age ", word, ""),
        ]
    )


def street_address(rng: random.Random) -> str:
    number, street = rng.randint(3, 9899), f"{rng.choice(_STREETS)} {rng.choice(_STREET_TYPES)}"
    return rng.choice(
        [
            f"{number} {street}",
            f"Apt 4{rng.choice('ABCD')}, {number} {street}",
            f"{number} {street}, Unit {rng.randint(1, 40)}",
            f"RR {rng.randint(1, 9)} Box {rng.randint(10, 400)}",
            f"Rural Route {rng.randint(1, 9)}",
            f"P.O. Box {rng.randint(10, 9999)}",
            f"{number} N. {street} #{rng.randint(100, 999)}",
            f"Flat {rng.randint(1, 9)}, {number} {street}",
        ]
    )


def zip_code(rng: random.Random) -> str:
    code = f"{rng.randint(1000, 99950):05d}"
    return code if rng.random() < 0.7 else f"{code}-{rng.randint(0, 9999):04d}"


def phone(rng: random.Random) -> str:
    area, mid, last = rng.randint(201, 989), rng.randint(200, 989), rng.randint(0, 9999)
    return rng.choice(
        [
            f"+1 ({area}) {mid}-{last:04d}",
            f"{area}.{mid}.{last:04d}",
            f"({area}) {mid} {last:04d} x{rng.randint(10, 999)}",
            f"{area}-{mid}-{last:04d} ext. {rng.randint(1, 99)}",
            f"{area}{mid}{last:04d}",
            f"+44 20 {rng.randint(7000, 8999)} {last:04d}",
            f"1-{area}-{mid}-{last:04d}",
            f"{mid}-{last:04d}",
        ]
    )


def email(rng: random.Random) -> str:
    given, surnames = _ORIGINS[rng.choice(sorted(_ORIGINS))]
    local = rng.choice(given).split()[0].lower() + rng.choice([".", "_", ""]) + rng.choice(surnames).lower()
    local = "".join(c for c in local if c.isascii() and (c.isalnum() or c in "._"))
    return f"{local}{rng.choice(['', str(rng.randint(1, 99))])}@{rng.choice(_DOMAINS)}"


def ssn(rng: random.Random) -> str:
    a, b, c = rng.randint(100, 665), rng.randint(10, 99), rng.randint(1000, 9999)
    return rng.choice([f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}{b}{c}", f"{a}.{b}.{c}"])


def mrn(rng: random.Random) -> str:
    digits = rng.randint(100000, 99999999)
    return rng.choice(
        [
            f"{digits:08d}",
            f"RB-{digits}",
            f"K{digits:07d}",
            f"{digits // 1000}-{digits % 1000:03d}",
            f"MR{digits}",
        ]
    )


def account(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{rng.randint(10**9, 10**10 - 1)}",
            f"ACC-{rng.randint(10000, 99999)}",
            f"FIN{rng.randint(10**8, 10**9)}",
        ]
    )


def health_plan(rng: random.Random) -> str:
    return rng.choice(
        [
            f"XJH{rng.randint(10**8, 10**9 - 1)}",
            f"NY{rng.randint(10**7, 10**8 - 1)}",
            f"{rng.randint(10, 99)}A-{rng.randint(1000, 9999)}-{rng.randint(0, 99):02d}",
            f"W{rng.randint(10**8, 10**9 - 1)}01",
        ]
    )


def licence(rng: random.Random) -> str:
    return rng.choice(
        [
            f"BK{rng.randint(10**6, 10**7 - 1)}",
            f"{rng.randint(10**9, 2 * 10**9)}",
            f"D{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
            f"MD-{rng.randint(10000, 99999)}",
            f"RN{rng.randint(100000, 999999)}",
        ]
    )


def vehicle(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
    return rng.choice(
        [
            f"{rng.randint(1, 9)}{letters}{rng.randint(100, 999)}",
            f"1HGCM{rng.randint(10000, 99999)}A{rng.randint(100000, 999999)}",
            f"{letters[:2]}-{rng.randint(1000, 9999)}",
        ]
    )


def device(rng: random.Random) -> str:
    return rng.choice(
        [
            f"PJN{rng.randint(100000, 999999)}H",
            f"{rng.randint(10000, 99999)}-{rng.randint(100, 999)}",
            f"{rng.randint(1, 9)}G-{rng.randint(1000, 9999)}-{rng.choice('ABC')}",
            f"RNX{rng.randint(10**5, 10**6 - 1)}S",
        ]
    )


def url(rng: random.Random) -> str:
    who = rng.choice(["hoa.nguyen", "folasade.a", "ji_woo_park", "siobhan.odonnell", "kwabena.m"])
    return rng.choice(
        [
            f"https://mychart.riverbend.org/patient/{rng.randint(1000, 99999)}",
            f"www.{who.replace('.', '-').replace('_', '-')}-recovery.blog",
            f"facebook.com/{who}.{rng.randint(1, 99)}",
            f"http://portal.lakeshore-rehab.net/u?id={rng.randint(1000, 9999)}",
            f"instagram.com/{who}",
        ]
    )


def ip_address(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"2001:db8:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def facility(rng: random.Random) -> str:
    return rng.choice(_FACILITIES)


# --- non-identifiers that must survive ------------------------------------------------------------------

_DRUGS = ["Metformin", "lisinopril", "Eliquis", "Keppra", "Xarelto", "atorvastatin", "Lasix", "Zofran"]
_DRUGS += ["Sinemet", "Humira", "Ativan", "Tylenol", "Coumadin", "Entresto", "Jardiance", "Mayzent"]
_EPONYMS = ["Parkinson's disease", "Crohn's", "Bell's palsy", "Hodgkin lymphoma", "Foley catheter"]
_EPONYMS += ["Glasgow Coma Scale", "Babinski sign", "Murphy's sign", "Cushing's syndrome", "Alzheimer's"]
_EPONYMS += ["Graves' disease", "Addison's", "Sjögren's", "Guillain-Barré", "Whipple procedure"]
_WORDS = ["Assessment", "Plan", "afebrile", "ambulating", "Discharge", "Hemodynamically stable", "NPO"]
_WORDS += ["Chest X-ray", "Wound", "Echo", "Physical Therapy", "Social Work", "Cardiology", "Neurology"]


def drug(rng: random.Random) -> str:
    return f"{rng.choice(_DRUGS)}"


def eponym(rng: random.Random) -> str:
    return rng.choice(_EPONYMS)


def _dose(rng: random.Random) -> str:
    return f"{rng.choice([5, 10, 20, 25, 40, 50, 500, 1000])} mg"


# --- note styles ----------------------------------------------------------------------------------------

Style = Callable[[random.Random, _Writer], None]


def _discharge(r: random.Random, w: _Writer) -> None:
    w.t("DISCHARGE SUMMARY\nPatient: ").p(Kind.NAME, name(r)).t("   MRN: ").p(Kind.MRN, mrn(r))
    w.t("\nAdmitted: ").p(Kind.DATE, date(r)).t("  Discharged: ").p(Kind.DATE, date(r))
    w.t("\nAttending: Dr. ").p(Kind.NAME, name(r, "full")).t("\nHospital course: ")
    w.age(age_over_89(r)).t(" woman with ").keep(eponym(r)).t(" admitted to ")
    w.p(Kind.FACILITY, facility(r)).t(" after a fall. Started on ").keep(drug(r)).t(" ").keep(_dose(r))
    w.t(". She ").keep("may").t(" shower. Prior stroke in ").keep(str(r.randint(1990, 2014)))
    w.t(".\nDisposition: home to ").p(Kind.STREET_ADDRESS, street_address(r)).t(", ")
    w.p(Kind.CITY, r.choice(_CITIES)).t(", ").keep(r.choice(_STATES)).t(" ").p(Kind.ZIP, zip_code(r))
    w.t("\nFollow-up with PCP ").p(Kind.NAME, name(r)).t(", tel ").phone(Kind.PHONE, phone(r)).t(".\n")


def _nursing(r: random.Random, w: _Writer) -> None:
    w.t("Nursing note ").p(Kind.DATE, date(r)).t(" 0700-1900. Pt ").p(Kind.NAME, name(r, "initial_last"))
    w.t(" (").age(age_over_89(r)).t(") resting. ").keep(r.choice(_WORDS)).t(". BP 128/76, HR ")
    w.t(f"{r.randint(60, 99)}. Given ").keep(drug(r)).t(" per order. Daughter ")
    w.p(Kind.NAME, name(r, r.choice(["full", "first"]))).t(" called from ").p(Kind.CITY, r.choice(_CITIES))
    w.t(" at ").phone(Kind.PHONE, phone(r)).t("; asked about ").keep(eponym(r)).t(". Pacemaker serial ")
    w.p(Kind.DEVICE, device(r)).t(" checked. Will ").keep("march").t(" in place with PT.\n")


def _referral(r: random.Random, w: _Writer) -> None:
    w.p(Kind.FACILITY, facility(r)).t("\n").p(Kind.STREET_ADDRESS, street_address(r)).t("\n")
    w.p(Kind.CITY, r.choice(_CITIES)).t(" ").p(Kind.ZIP, zip_code(r)).t("\nFax ").phone(Kind.FAX, phone(r))
    w.t("\n\n").p(Kind.DATE, date(r)).t("\n\nDear Dr. ").p(Kind.NAME, name(r, "full").split()[-1])
    w.t(",\nThank you for seeing ").p(Kind.NAME, name(r)).t(", a pleasant ").keep(
        f"{r.randint(40, 88)}-year-old"
    )
    w.t(" with ").keep(eponym(r)).t(" on ").keep(drug(r)).t(". Member ID ").p(
        Kind.HEALTH_PLAN, health_plan(r)
    )
    w.t(", SSN ").p(Kind.SSN, ssn(r)).t(". Images at ").p(Kind.URL, url(r)).t(".\nYours sincerely,\n")
    w.p(Kind.NAME, name(r)).t(", MD  (DEA ").p(Kind.LICENCE, licence(r)).t(")\n")


def _radiology(r: random.Random, w: _Writer) -> None:
    w.t("EXAM: CT HEAD W/O CONTRAST\nNAME: ").p(Kind.NAME, name(r, "caps")).t("  DOB: ").p(Kind.DATE, date(r))
    w.t("  AGE: ").age(age_over_89(r)).t("\nACC#: ").p(Kind.ACCOUNT, account(r))
    w.t("  MRN ").p(Kind.MRN, mrn(r)).t("\nREF PHYS: ").p(Kind.NAME, name(r, "caps")).t("\nSITE: ")
    w.p(Kind.FACILITY, facility(r).upper()).t("  WORKSTATION ").p(Kind.IP_ADDRESS, ip_address(r))
    w.t("\nFINDINGS: No acute hemorrhage. Changes of ").keep(eponym(r)).t(". Compared with study of ")
    w.p(Kind.DATE, date(r)).t(".\n")


def _portal(r: random.Random, w: _Writer) -> None:
    w.t("hi dr ").p(Kind.NAME, name(r, "lower").split()[-1]).t(", this is ").p(Kind.NAME, name(r, "full"))
    w.t(" (my email is ").p(Kind.EMAIL, email(r)).t("). my mom is ").age(age_over_89(r))
    w.t(" and the ").keep(drug(r)).t(" makes her dizzy. we moved her to ").p(Kind.FACILITY, facility(r))
    w.t(" in ").p(Kind.CITY, r.choice(_CITIES)).t(" on the ").p(Kind.DATE, date(r)).t(". can you call me at ")
    w.phone(Kind.PHONE, phone(r)).t("? our car (plate ").p(Kind.VEHICLE, vehicle(r)).t(
        ") got towed from your lot lol\n"
    )


def _table(r: random.Random, w: _Writer) -> None:
    w.t("Contacts\n| role | name | phone | email |\n|---|---|---|---|\n")
    for role in ("Patient", "Next of kin", "Case manager"):
        w.t(f"| {role} | ").p(Kind.NAME, name(r)).t(" | ").phone(Kind.PHONE, phone(r)).t(" | ")
        w.p(Kind.EMAIL, email(r)).t(" |\n")
    w.t("\nInsurance: ").p(Kind.HEALTH_PLAN, health_plan(r)).t("\nAccount: ").p(Kind.ACCOUNT, account(r))
    w.t("\nDriver's licence: ").p(Kind.LICENCE, licence(r)).t("\nMeds: ").keep(drug(r)).t(", ").keep(drug(r))
    w.t("\nDx: ").keep(eponym(r)).t("\nLast visit: ").p(Kind.DATE, date(r)).t("\n")


def _caps_transfer(r: random.Random, w: _Writer) -> None:
    w.t("TRANSFER FROM ").p(Kind.FACILITY, facility(r).upper()).t(" TO ").p(
        Kind.FACILITY, facility(r).upper()
    )
    w.t("\nPT NAME ").p(Kind.NAME, name(r, "caps")).t("  SSN ").p(Kind.SSN, ssn(r)).t("\nADDR ")
    w.p(Kind.STREET_ADDRESS, street_address(r).upper()).t(", ").p(Kind.CITY, r.choice(_CITIES).upper())
    w.t(" ").p(Kind.ZIP, zip_code(r)).t("\nTRANSFER DATE ").p(Kind.DATE, date(r).upper()).t("\nDX ")
    w.keep(eponym(r).upper()).t(", ON ").keep(drug(r).upper()).t("\nSENDING RN CALLBACK ").phone(
        Kind.PHONE, phone(r)
    )
    w.t("  FAX ").phone(Kind.FAX, phone(r)).t("\n")


def _chat(r: random.Random, w: _Writer) -> None:
    w.t("[08:14] rn2: bed 12 is ").p(Kind.NAME, name(r, "lower")).t(", ").age(age_over_89(r))
    w.t(", came in from ").p(Kind.FACILITY, r.choice(_FACILITIES_LOWER)).t(" last nite\n[08:15] md1: ok. ")
    w.keep(drug(r).lower()).t(" held? she ").keep("may").t(" need a ").keep("foley").t(
        "\n[08:16] rn2: yes. son "
    )
    w.p(Kind.NAME, name(r, "lower").split()[0]).t(" says she lives at ").p(
        Kind.STREET_ADDRESS, street_address(r).lower()
    )
    w.t(" in ").p(Kind.CITY, r.choice(_CITIES).lower()).t(". login from ").p(Kind.IP_ADDRESS, ip_address(r))
    w.t(" flagged her chart ").p(Kind.MRN, mrn(r)).t("\n[08:17] md1: thx. see ").p(Kind.URL, url(r)).t("\n")


STYLES: dict[str, Style] = {
    "discharge": _discharge,
    "nursing": _nursing,
    "referral": _referral,
    "radiology": _radiology,
    "portal": _portal,
    "table": _table,
    "caps_transfer": _caps_transfer,
    "chat": _chat,
}


def generate_independent_notes(n: int, *, seed: int) -> list[Note]:
    """``n`` notes, the styles in turn, every value drawn from a generator seeded with ``seed``."""
    rng = random.Random(seed)
    names = sorted(STYLES)
    notes = []
    for i in range(n):
        style = names[i % len(names)]
        writer = _Writer()
        STYLES[style](rng, writer)
        notes.append(Note(style, writer.text(), writer.planted))
    return notes


# --- scoring --------------------------------------------------------------------------------------------


@dataclass
class IndependentScore:
    """Recall per kind ("removed" = none of the value's letters or digits left) and decoys kept."""

    found: dict[Kind, int] = field(default_factory=lambda: defaultdict(int))
    planted: dict[Kind, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[tuple[Kind, str, str]] = field(default_factory=list)
    decoys: int = 0
    decoys_hit: list[str] = field(default_factory=list)
    spans: int = 0
    spans_on_phi: int = 0

    def recall(self, kind: Kind) -> float:
        return self.found[kind] / self.planted[kind]

    def overall_recall(self) -> float:
        return sum(self.found.values()) / sum(self.planted.values())

    def decoy_precision(self) -> float:
        """The share of planted non-identifiers left whole."""
        return 1 - len(self.decoys_hit) / self.decoys

    def span_precision(self) -> float:
        """The share of removed spans that overlap a planted identifier."""
        return self.spans_on_phi / self.spans if self.spans else 1.0


def score_notes(finder: PHIFinder, notes: Sequence[Note]) -> IndependentScore:
    score = IndependentScore()
    for note in notes:
        spans = finder.find(note.text)
        covered = set()
        for span in spans:
            covered.update(range(span.start, span.end))
        phi = [p for p in note.planted if p.kind is not None]
        score.spans += len(spans)
        score.spans_on_phi += sum(any(s.start < p.end and p.start < s.end for p in phi) for s in spans)
        for p in note.planted:
            alnum = [i for i in range(p.start, p.end) if note.text[i].isalnum()]
            if p.kind is None:
                score.decoys += 1
                if any(i in covered for i in alnum):
                    score.decoys_hit.append(p.value)
                continue
            score.planted[p.kind] += 1
            if all(i in covered for i in alnum):
                score.found[p.kind] += 1
            else:
                line = next(ln for ln in note.text.splitlines() if p.value.split("\n")[0] in ln)
                score.misses.append((p.kind, p.value, line.strip()))
    return score
