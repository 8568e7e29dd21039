"""Identifiers and look-alikes drawn for the fifth synthetic note set (`tests/deid_notes_fifth.py`).

Written from general knowledge without reading the de-identifier or the other note sets. Every
identifier is wrapped by `mark` as it is drawn, and `unmark` strips the wrappers from a finished note
and returns each identifier's exact character span; look-alikes are drawn as plain text.

Kinds (`tests.deid_sets.TYPES`): accession numbers count as MRN (a record identifier), NPI, DEA and
state licences as LICENCE, serial numbers of implants and pumps as DEVICE, plates and VINs as VEHICLE.
States stay in the text: Safe Harbor removes only geographic units smaller than a state.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import string
from dataclasses import dataclass

from tests import deid_fifth_pools as pools

_MARK = re.compile("\x01([A-Z_0-9]+)\x02(.*?)\x03", re.DOTALL)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def mark(kind: str, value: str) -> str:
    return f"\x01{kind}\x02{value}\x03"


def unmark(raw: str) -> tuple[str, tuple[Span, ...]]:
    """The note's text without markers, and each marked value's span in it."""
    parts: list[str] = []
    spans: list[Span] = []
    length = 0
    cursor = 0
    for match in _MARK.finditer(raw):
        plain = raw[cursor : match.start()]
        parts.append(plain)
        length += len(plain)
        value = match.group(2)
        spans.append(Span(length, length + len(value), match.group(1)))
        parts.append(value)
        length += len(value)
        cursor = match.end()
    parts.append(raw[cursor:])
    text = "".join(parts)
    stray = next((ch for ch in "\x01\x02\x03" if ch in text), None)
    if stray is not None:
        raise ValueError(f"note text: a marker {stray!r} was left unmatched (a marked value was altered)")
    return text, tuple(spans)


@dataclass(frozen=True)
class Person:
    given: str
    family: str
    middle: str


_UNITS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _age_words(age: int) -> str:
    if age < 100:
        return "ninety" + (f"-{_UNITS[age - 90]}" if age > 90 else "")
    rest = age - 100
    return "one hundred" + (f" and {_UNITS[rest]}" if rest else "")


def _luhn_digit(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10


class Draws:
    """Draws identifiers (marked) and look-alikes (plain) from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    # --- people ---
    def person(self) -> Person:
        given, family = self.r.choice(list(pools.NAMES.values()))
        # Origins mix: a given name from one pool, a family name from another, now and then.
        if self.r.random() < 0.25:
            family = self.r.choice(list(pools.NAMES.values()))[1]
        return Person(self.r.choice(given), self.r.choice(family), self.r.choice(pools.MIDDLE_INITIALS))

    def name(self, p: Person, form: str | None = None) -> str:
        form = form or self.r.choice(
            ("full", "full", "full", "middle", "sorted", "caps", "caps_sorted", "lower", "initial")
        )
        value = {
            "full": f"{p.given} {p.family}",
            "middle": f"{p.given} {p.middle}. {p.family}",
            "sorted": f"{p.family}, {p.given}",
            "caps": f"{p.given} {p.family}".upper(),
            "caps_sorted": f"{p.family.upper()}, {p.given.upper()}",
            "lower": f"{p.given} {p.family}".lower(),
            "initial": f"{p.given[0]}. {p.family}",
            "family": p.family,
            "given": p.given,
            "family_lower": p.family.lower(),
        }[form]
        return mark("NAME", value)

    def patient_name(self, p: Person) -> str:
        return self.name(p)

    def clinician(self) -> str:
        p = self.person()
        return self.r.choice(
            (
                f"Dr. {self.name(p, 'family')}",
                f"Dr {self.name(p, 'full')}",
                f"{self.name(p, 'full')}, MD",
                f"{self.name(p, 'initial')}, DO",
                f"{self.name(p, 'full')}, NP",
                f"dr. {self.name(p, 'family_lower')}",
                f"{self.name(p, 'middle')}, MD, PhD",
                f"{self.name(p, 'caps')} RN",
                f"Dr. {self.name(p, 'given')}",
            )
        )

    def relative(self) -> str:
        rel = self.r.choice(("daughter", "son", "wife", "husband", "niece", "grandson", "sister", "partner"))
        p = self.person()
        return f"{rel} {self.name(p, self.r.choice(('full', 'given', 'full', 'lower')))}"

    # --- places ---
    def facility(self, kind: str | None = None) -> str:
        kind = kind or self.r.choice(("hospital", "hospital", "clinic", "nursing"))
        if self.r.random() < 0.2:
            return mark("FACILITY", self.r.choice(pools.BARE_FACILITIES))
        return mark(
            "FACILITY", f"{self.r.choice(pools.FACILITY_STEMS)} {self.r.choice(pools.FACILITY_KINDS[kind])}"
        )

    def street(self) -> str:
        n = self.r.randint(1, 98765)
        choice = self.r.random()
        if choice < 0.25:
            value = f"{n} {self.r.choice(pools.FOREIGN_STREETS)}"
        elif choice < 0.35:
            value = f"{self.r.choice(pools.GERMANIC_STREETS)} {self.r.randint(1, 120)}"
        else:
            direction = self.r.choice(pools.DIRECTIONS)
            value = " ".join(
                x
                for x in (
                    str(n),
                    direction,
                    self.r.choice(pools.STREET_NAMES),
                    self.r.choice(pools.STREET_TYPES),
                )
                if x
            )
        if self.r.random() < 0.3:
            value += self.r.choice((", ", " ")) + self.r.choice(pools.UNITS)
        return mark("STREET_ADDRESS", value)

    def po_box(self) -> str:
        n = self.r.randint(2, 99999)
        return mark(
            "PO_BOX",
            self.r.choice(
                (f"P.O. Box {n}", f"PO Box {n}", f"Post Office Box {n}", f"P. O. BOX {n}", f"po box {n}")
            ),
        )

    def city(self) -> tuple[str, str]:
        city, state = self.r.choice(pools.CITIES)
        return mark("CITY", city), state

    def zip(self) -> str:
        z = f"{self.r.randint(601, 99950):05d}"
        if self.r.random() < 0.3:
            z += f"-{self.r.randint(0, 9999):04d}"
        return mark("ZIP", z)

    def city_line(self) -> str:
        city, state = self.city()
        state_text = state if self.r.random() < 0.7 else pools.STATE_NAMES[state]
        return self.r.choice((f"{city}, {state_text} {self.zip()}", f"{city} {state_text} {self.zip()}"))

    def address(self) -> str:
        sep = self.r.choice((", ", "\n", ", "))
        return f"{self.street()}{sep}{self.city_line()}"

    # --- dates and ages ---
    def day(self) -> dt.date:
        return dt.date(2023, 1, 1) + dt.timedelta(days=self.r.randint(0, 1400))

    def date(self, d: dt.date | None = None, form: str | None = None) -> str:
        d = d or self.day()
        form = form or self.r.choice(
            ("mdy", "mdy", "mdy_short", "iso", "long", "abbr", "dmy_long", "dmy_abbr", "ordinal", "of",
             "month_year", "mm_yyyy", "md", "dotted", "weekday", "sept", "compact")
        )  # fmt: skip
        month = d.strftime("%B")
        suffix = "th" if 11 <= d.day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d.day % 10, "th")
        if form == "weekday":
            return f"{d.strftime('%A')}, {mark('DATE', f'{month} {d.day}, {d.year}')}"
        value = {
            "mdy": f"{d.month:02d}/{d.day:02d}/{d.year}",
            "mdy_short": f"{d.month}/{d.day}/{d.year % 100:02d}",
            "iso": d.isoformat(),
            "long": f"{month} {d.day}, {d.year}",
            "abbr": f"{d.strftime('%b')} {d.day}, {d.year}",
            "dmy_long": f"{d.day} {month} {d.year}",
            "dmy_abbr": f"{d.day:02d}-{d.strftime('%b')}-{d.year}",
            "ordinal": f"{month} {d.day}{suffix}",
            "of": f"{d.day}{suffix} of {month}, {d.year}",
            "month_year": f"{month} {d.year}",
            "mm_yyyy": f"{d.month:02d}/{d.year}",
            "md": f"{d.month}/{d.day}",
            "dotted": f"{d.day:02d}.{d.month:02d}.{d.year}",
            "sept": f"Sept. {d.day}, {d.year}" if d.month == 9 else f"{d.strftime('%b')}. {d.day}",
            "compact": f"{d.year}{d.month:02d}{d.day:02d}",
        }[form]
        return mark("DATE", value)

    def dob(self) -> str:
        d = dt.date(1925, 1, 1) + dt.timedelta(days=self.r.randint(0, 30000))
        return self.date(d, self.r.choice(("mdy", "long", "iso", "dmy_abbr", "mdy_short")))

    def old_age(self) -> str:
        """An age over 89 with the words around it; the span is the number alone."""
        age = self.r.randint(90, 106)
        words = _age_words(age)
        return self.r.choice(
            (
                f"{mark('AGE_OVER_89', str(age))}-year-old",
                f"{mark('AGE_OVER_89', str(age))} yo",
                f"{mark('AGE_OVER_89', str(age))} y/o",
                f"age {mark('AGE_OVER_89', str(age))}",
                f"aged {mark('AGE_OVER_89', str(age))}",
                f"{mark('AGE_OVER_89', words)}-year-old",
                f"{mark('AGE_OVER_89', words)} years old",
                f"{mark('AGE_OVER_89', words.capitalize())}-year-old",
                f"{mark('AGE_OVER_89', str(age))} years of age",
                f"{mark('AGE_OVER_89', str(age))}yo",
            )
        )

    def young_age(self) -> str:
        age = self.r.randint(18, 89)
        return self.r.choice((f"{age}-year-old", f"{age} yo", f"age {age}", f"{age} y/o", f"{age} years old"))

    # --- numbers ---
    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def letters(self, n: int) -> str:
        return "".join(self.r.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(n))

    def phone(self, kind: str = "PHONE") -> str:
        a, b, c = self.r.randint(201, 989), self.r.randint(201, 989), self.digits(4)
        value = self.r.choice(
            (
                f"({a}) {b}-{c}",
                f"{a}-{b}-{c}",
                f"{a}.{b}.{c}",
                f"1-{a}-{b}-{c}",
                f"+1 {a} {b} {c}",
                f"({a}) {b}-{c} ext. {self.r.randint(2, 9999)}",
                f"{a}-{b}-{c} x{self.r.randint(10, 999)}",
                f"+44 20 {self.digits(4)} {self.digits(4)}",
                f"+91 {self.digits(5)} {self.digits(5)}",
                f"+234 803 {self.digits(3)} {self.digits(4)}",
                f"+52 33 {self.digits(4)} {self.digits(4)}",
                f"{a}{b}{c}",
            )
        )
        return mark(kind, value)

    def email(self, p: Person | None = None) -> str:
        p = p or self.person()
        local = re.sub(r"[^a-z]", "", p.given.lower().encode("ascii", "ignore").decode()) or "pt"
        fam = re.sub(r"[^a-z]", "", p.family.lower().encode("ascii", "ignore").decode()) or "x"
        local = self.r.choice(
            (
                f"{local}.{fam}",
                f"{local[0]}{fam}{self.r.randint(1, 99)}",
                f"{fam}_{local}",
                f"{local}{self.r.randint(1950, 2005)}",
            )
        )
        return mark("EMAIL", f"{local}@{self.r.choice(pools.EMAIL_DOMAINS)}")

    def ssn(self) -> str:
        a, b, c = f"{self.r.randint(1, 665):03d}", self.digits(2), self.digits(4)
        return mark("SSN", self.r.choice((f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}{b}{c}", f"{a}.{b}.{c}")))

    def mrn(self) -> str:
        return mark(
            "MRN",
            self.r.choice(
                (
                    self.digits(8),
                    f"{self.digits(3)}-{self.digits(2)}-{self.digits(3)}",
                    f"{self.letters(1)}{self.digits(7)}",
                    f"MR{self.digits(6)}",
                    f"{self.digits(2)}-{self.digits(6)}",
                )
            ),
        )

    def accession(self) -> str:
        year = self.r.randint(23, 26)
        return mark(
            "MRN",
            self.r.choice(
                (
                    f"S{year}-{self.digits(5)}",
                    f"CH-20{year}-{self.digits(6)}",
                    f"RAD{self.digits(9)}",
                    f"{self.letters(2)}{year}-{self.digits(4)}",
                )
            ),
        )

    def account(self) -> str:
        return mark(
            "ACCOUNT",
            self.r.choice(
                (
                    self.digits(10),
                    f"{self.digits(4)}-{self.digits(2)}-{self.digits(3)}",
                    f"HB-{self.digits(7)}",
                    f"{self.letters(3)}{self.digits(8)}",
                )
            ),
        )

    def plan_id(self) -> str:
        mbi = f"{self.r.randint(1, 9)}{self.letters(1)}{self.r.choice('ABCDEFGHJK')}{self.digits(1)}-{self.letters(1)}{self.letters(1)}{self.digits(1)}-{self.letters(2)}{self.digits(2)}"
        return mark(
            "HEALTH_PLAN",
            self.r.choice(
                (
                    f"{self.letters(3)}{self.digits(9)}",
                    mbi,
                    f"{self.digits(10)}",
                    f"{self.letters(1)}{self.digits(8)}-01",
                    f"W{self.digits(9)}",
                )
            ),
        )

    def npi(self) -> str:
        base = f"{self.r.randint(1, 2)}{self.digits(8)}"
        return mark("LICENCE", base + str(_luhn_digit("80840" + base)))

    def dea(self, family: str = "A") -> str:
        first = self.r.choice("ABFGMP")
        second = (family[0].upper() if family[0].isalpha() else "X").encode("ascii", "ignore").decode() or "X"
        d = [self.r.randint(0, 9) for _ in range(6)]
        check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
        return mark("LICENCE", f"{first}{second}{''.join(map(str, d))}{check}")

    def state_licence(self) -> str:
        return mark(
            "LICENCE",
            self.r.choice(
                (
                    f"MD{self.digits(6)}",
                    f"RN-{self.digits(7)}",
                    f"{self.digits(2)}-{self.digits(5)}",
                    f"D{self.digits(3)}-{self.digits(4)}-{self.digits(4)}",
                    f"LPN.{self.digits(6)}",
                )
            ),
        )

    def device(self) -> str:
        return mark(
            "DEVICE",
            self.r.choice(
                (
                    f"PJN{self.digits(6)}S",
                    f"{self.digits(2)}-{self.digits(4)}-{self.digits(4)}",
                    f"SN{self.digits(9)}",
                    f"RNB{self.digits(6)}H",
                    f"(01)00{self.digits(12)}(21){self.letters(2)}{self.digits(5)}",
                    f"{self.letters(3)}-{self.digits(5)}-{self.letters(1)}",
                )
            ),
        )

    def plate(self) -> str:
        return mark(
            "VEHICLE",
            self.r.choice(
                (
                    f"{self.r.randint(1, 9)}{self.letters(3)}{self.digits(3)}",
                    f"{self.letters(3)}-{self.digits(4)}",
                    f"{self.letters(2)} {self.digits(5)}",
                    f"{self.digits(3)} {self.letters(3)}",
                )
            ),
        )

    def vin(self) -> str:
        chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        return mark("VEHICLE", "1" + "".join(self.r.choice(chars) for _ in range(16)))

    def url(self, p: Person | None = None) -> str:
        host = self.r.choice(pools.WEB_HOSTS)
        tail = self.r.choice(
            (
                f"/patients/{self.digits(6)}",
                f"/visit/{(p.family if p else 'family').lower().replace(' ', '-')}-{self.digits(3)}",
                f"/join?room={self.letters(3)}{self.digits(4)}",
                f"/r/{self.letters(2)}{self.digits(5)}",
            )
        )
        return mark("URL", self.r.choice(("https://", "http://", "")) + host + tail)

    def ip(self) -> str:
        if self.r.random() < 0.2:
            return mark(
                "IP_ADDRESS", f"2001:db8:{self.r.randint(1, 0xFFFF):x}::{self.r.randint(1, 0xFFFF):x}"
            )
        return mark("IP_ADDRESS", ".".join(str(self.r.randint(1, 254)) for _ in range(4)))

    # --- look-alikes (plain text) ---
    def vitals(self) -> str:
        r = self.r
        systolic = r.randint(88, 182)
        return (
            f"BP {systolic}/{r.randint(48, min(108, systolic - 25))}, HR {r.randint(48, 138)}, RR {r.randint(12, 32)}, "
            f"T {r.randint(360, 401) / 10:.1f} C, SpO2 {r.randint(84, 100)}% on {r.choice(('room air', '2 L NC', '4 L NC', 'NRB'))}"
        )

    def labs(self) -> str:
        r = self.r
        return (
            f"Na {r.randint(126, 148)}, K {r.randint(30, 62) / 10:.1f}, Cr {r.randint(5, 48) / 10:.1f}, "
            f"WBC {r.randint(30, 240) / 10:.1f}, Hgb {r.randint(70, 165) / 10:.1f}, Plt {r.randint(60, 450)}, INR {r.randint(9, 38) / 10:.1f}"
        )

    def drug(self) -> str:
        return self.r.choice(pools.DRUGS)

    def eponym(self) -> str:
        return self.r.choice(pools.EPONYMS)

    def room(self) -> str:
        return self.r.choice(
            (
                f"room {self.r.randint(100, 899)}",
                f"Rm {self.r.randint(2, 12)}{self.r.choice('ABCD')}",
                f"bed {self.r.randint(1, 30)}",
                f"bay {self.r.randint(1, 20)}",
            )
        )

    def year(self) -> str:
        return str(self.r.randint(1978, 2024))

    def holiday(self) -> str:
        return self.r.choice(pools.HOLIDAYS)

    def spine(self) -> str:
        return self.r.choice(pools.SPINE_LEVELS)

    def pain(self) -> str:
        return f"{self.r.randint(0, 10)}/10"
