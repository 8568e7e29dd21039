"""Text with planted spans, and the formats identifiers take in the sixth note set.

`fill` turns a template with `{key}` fields into a `Frag`: the text and the exact `(start, end, type)`
of every planted value in it. A field's value is a plain `str` (filler, never planted: a dose, a state,
a bed number), a `P` (one planted identifier) or another `Frag` (a filled piece, its spans shifted).
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass

from tests import deid_sixth_pools as pools


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class P:
    """One planted identifier."""

    text: str
    kind: str


@dataclass(frozen=True)
class Frag:
    text: str
    spans: tuple[Span, ...] = ()


Value = str | P | Frag

_FORMATTER = string.Formatter()


def fill(template: str, values: Mapping[str, Value]) -> Frag:
    out: list[str] = []
    spans: list[Span] = []
    at = 0
    for literal, field_name, _, _ in _FORMATTER.parse(template):
        out.append(literal)
        at += len(literal)
        if field_name is None:
            continue
        value = values[field_name]
        if isinstance(value, P):
            spans.append(Span(at, at + len(value.text), value.kind))
            text = value.text
        elif isinstance(value, Frag):
            spans.extend(Span(s.start + at, s.end + at, s.kind) for s in value.spans)
            text = value.text
        else:
            text = value
        out.append(text)
        at += len(text)
    return Frag("".join(out), tuple(spans))


def join(parts: list[Frag], sep: str = "\n") -> Frag:
    values: dict[str, Value] = {f"p{i}": part for i, part in enumerate(parts)}
    return fill(sep.join("{" + f"p{i}" + "}" for i in range(len(parts))), values)


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def letters(rng: random.Random, n: int, alphabet: str = "ABCDEFGHJKLMNPRSTUVWXYZ") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# ---------------------------------------------------------------- dates


def date(rng: random.Random, *, year_from: int = 2019, year_to: int = 2026) -> str:
    """A date of care, in one of the many ways it is written; partial dates (no year) included."""
    y = rng.randint(year_from, year_to)
    m = rng.randint(1, 12)
    d = rng.randint(1, 28)
    mon = pools.MONTHS[m - 1]
    suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(d, "th")
    style = rng.randrange(19)
    forms = (
        f"{m:02d}/{d:02d}/{y}",
        f"{m}/{d}/{y % 100:02d}",
        f"{y}-{m:02d}-{d:02d}",
        f"{mon} {d}, {y}",
        f"{d} {mon[:3]} {y}",
        f"{mon[:3]} {d}",
        f"{m}/{d}",
        f"{m:02d}-{d:02d}-{y}",
        f"{d:02d}-{mon[:3].upper()}-{y}",
        f"{mon} {y}",
        f"{mon[:3]}{'.' if len(mon) > 3 else ''} {d}{suffix}",
        f"{m}.{d}.{y % 100:02d}",
        f"{m}/{d}/{y}",
        f"{mon.lower()} {d}",
        f"{mon[:3].upper()} {d} {y}",
        f"{d}/{mon[:3]}/{y}",
        f"{m:02d}/{y}",
        f"the {d}{suffix} of {mon}",
        f"{mon[:3]} {d}{suffix}, {y}",
    )
    return forms[style]


def dob(rng: random.Random) -> str:
    y = rng.randint(1930, 2008)
    m = rng.randint(1, 12)
    d = rng.randint(1, 28)
    return rng.choice(
        (
            f"{m:02d}/{d:02d}/{y}",
            f"{m}/{d}/{y}",
            f"{y}-{m:02d}-{d:02d}",
            f"{pools.MONTHS[m - 1]} {d}, {y}",
            f"{m}-{d}-{y % 100:02d}",
            f"{d:02d}{pools.MONTHS[m - 1][:3].upper()}{y}",
        )
    )


def old_age(rng: random.Random) -> str:
    age = rng.randint(90, 102)
    return pools.NUMBER_WORDS[age] if rng.random() < 0.15 else str(age)


# ---------------------------------------------------------------- numbers people call


def phone(rng: random.Random) -> str:
    area = rng.choice(
        ("608", "715", "414", "208", "336", "320", "505", "337", "269", "270", "509", "601", "785")
    )
    ex = str(rng.randint(201, 989))
    line = digits(rng, 4)
    style = rng.randrange(10)
    forms = (
        f"({area}) {ex}-{line}",
        f"{area}-{ex}-{line}",
        f"{area}.{ex}.{line}",
        f"{area}{ex}{line}",
        f"+1 {area} {ex} {line}",
        f"{ex}-{line}",
        f"({area}){ex}-{line}",
        f"1-{area}-{ex}-{line}",
        f"{area}-{ex}-{line}",
        f"{area} {ex} {line}",
    )
    return forms[style]


def email(rng: random.Random, p: pools.Person, *, clinician: bool = False) -> str:
    given = _ascii(p.given.split()[0].split("-")[0]).lower()
    surname = _ascii(p.surname.replace(" ", "").replace("'", "")).lower()
    if clinician:
        user = rng.choice((f"{given[0]}{surname}", f"{given}.{surname}", f"{surname}{given[0]}"))
        return f"{user}@{rng.choice(pools.CLINIC_DOMAINS)}"
    user = rng.choice(
        (
            f"{given}.{surname}{rng.randint(1, 99)}",
            f"{given}_{surname[:4]}{rng.randint(1950, 2005)}",
            f"{surname}{given[0]}",
            f"{rng.choice(('grandma', 'mama', 'bigdog', 'packerfan', 'sunshine'))}{rng.randint(1, 999)}",
            f"{given}{surname}",
        )
    )
    return f"{user}@{rng.choice(pools.EMAIL_DOMAINS)}"


def _ascii(s: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", s) if c.isascii() and (c.isalnum() or c in ".-_"))


def ssn_field(rng: random.Random) -> Frag:
    """A whole SSN, or a masked one whose last four digits are what is planted."""
    area = rng.choice([a for a in range(1, 900) if a != 666])
    group = rng.randint(1, 99)
    serial = rng.randint(1, 9999)
    style = rng.randrange(7)
    if style == 0:
        return fill("{v}", {"v": P(f"{area:03d}-{group:02d}-{serial:04d}", "SSN")})
    if style == 1:
        return fill("{v}", {"v": P(f"{area:03d} {group:02d} {serial:04d}", "SSN")})
    if style == 2:
        return fill("{v}", {"v": P(f"{area:03d}{group:02d}{serial:04d}", "SSN")})
    if style == 3:
        return fill("xxx-xx-{v}", {"v": P(f"{serial:04d}", "SSN")})
    if style == 4:
        return fill("***-**-{v}", {"v": P(f"{serial:04d}", "SSN")})
    if style == 5:
        return fill("ending in {v}", {"v": P(f"{serial:04d}", "SSN")})
    return fill("{v}", {"v": P(f"{area:03d}-{group:02d}-{serial:04d}", "SSN")})


def mrn(rng: random.Random) -> str:
    return rng.choice(
        (
            digits(rng, 8),
            f"{rng.choice('EMK')}{digits(rng, 7)}",
            f"{digits(rng, 2)}-{digits(rng, 3)}-{digits(rng, 3)}",
            f"00{digits(rng, 6)}",
            f"MR{digits(rng, 7)}",
            f"{digits(rng, 3)} {digits(rng, 4)}",
            f"A-{digits(rng, 8)}",
        )
    )


def account(rng: random.Random) -> str:
    return rng.choice(
        (
            digits(rng, 10),
            f"HAR {digits(rng, 10)}",
            f"{rng.randint(2019, 2026)}-{digits(rng, 7)}",
            f"{digits(rng, 2)}-{digits(rng, 4)}-{digits(rng, 4)}",
            f"V{digits(rng, 9)}",
            f"{digits(rng, 12)}",
        )
    )


def health_plan(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{letters(rng, 3)}{digits(rng, 9)}",
            f"{rng.randint(1, 9)}{letters(rng, 2)}{rng.randint(0, 9)}-{letters(rng, 1)}{rng.randint(0, 9)}"
            f"{letters(rng, 1)}-{letters(rng, 2)}{digits(rng, 2)}",  # Medicare MBI, dashed
            f"{digits(rng, 8)}{letters(rng, 1)}",
            f"H{digits(rng, 4)}-{digits(rng, 5)}",
            f"W{digits(rng, 8)} {digits(rng, 2)}",
            f"{letters(rng, 1)}{digits(rng, 8)}",
        )
    )


def licence(rng: random.Random) -> tuple[str, str]:
    """(label, number): a prescriber's or nurse's licence, or a patient's driver's licence."""
    return rng.choice(
        (
            ("DEA #", f"{letters(rng, 2)}{digits(rng, 7)}"),
            ("DL#", f"{letters(rng, 1)}{digits(rng, 3)}-{digits(rng, 4)}-{digits(rng, 4)}-{digits(rng, 2)}"),
            ("RN lic.", f"RN{digits(rng, 6)}"),
            ("State license no.", f"{rng.choice(('MD', 'DO', 'APNP'))}-{digits(rng, 5)}"),
            ("driver's license", f"{letters(rng, 1)}{digits(rng, 7)}"),
            ("Lic#", f"{digits(rng, 6)}-{rng.randint(20, 60)}"),
            ("ID card no.", f"{digits(rng, 3)}-{digits(rng, 3)}-{digits(rng, 3)}"),
        )
    )


def device_serial(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{letters(rng, 3)}{digits(rng, 6)}{letters(rng, 1)}",
            f"{digits(rng, 11)}",
            f"{digits(rng, 4)}-{letters(rng, 2)}{digits(rng, 4)}",
            f"(21){letters(rng, 1)}{digits(rng, 7)}",
            f"{digits(rng, 1)}{letters(rng, 5)}",
            f"PJN{digits(rng, 6)}S",
        )
    )


def plate(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{rng.randint(1, 9)}{letters(rng, 3)}{digits(rng, 3)}",
            f"{letters(rng, 3)}-{digits(rng, 4)}",
            f"{letters(rng, 3)} {digits(rng, 4)}",
            f"{digits(rng, 3)}-{letters(rng, 3)}",
            f"{letters(rng, 2)}{digits(rng, 5)}",
        )
    )


def vin(rng: random.Random) -> str:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return rng.choice(("1", "2", "3", "5", "J", "W")) + letters(rng, 16, alphabet)


def url(rng: random.Random, p: pools.Person) -> str:
    slug = _ascii(p.given.split()[0]).lower() + "-" + _ascii(p.surname.replace(" ", "")).lower()
    return rng.choice(
        (
            f"https://{rng.choice(pools.PORTAL_DOMAINS)}/MyChart/Messages/{digits(rng, 6)}",
            f"www.gofundme.com/f/{slug}-recovery-fund",
            f"facebook.com/{slug.replace('-', '.')}",
            f"http://{rng.choice(pools.PORTAL_DOMAINS)}/records?pid={digits(rng, 7)}",
            f"https://www.caringbridge.org/visit/{slug.replace('-', '')}",
            f"instagram.com/{slug.replace('-', '_')}{rng.randint(1, 99)}",
        )
    )


def ip_address(rng: random.Random) -> str:
    if rng.random() < 0.12:
        return f"2601:{rng.randint(256, 4095):x}:{rng.randint(256, 65535):x}:{rng.randint(16, 255):x}::{rng.randint(1, 255):x}"
    first = rng.choice((10, 172, 192, 73, 98, 24, 66, 174))
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def street(rng: random.Random) -> str:
    number = rng.randint(2, 19999)
    name = rng.choice(pools.STREETS)
    kind = rng.choice(pools.STREET_TYPES)
    style = rng.randrange(9)
    if style == 0:
        return f"{number} {rng.choice(pools.DIRECTIONS)} {name} {kind}"
    if style == 1:
        return f"{number} {name} {kind}, Apt {rng.randint(1, 40)}{rng.choice('ABCD')}"
    if style == 2:
        return f"{number} {name} {kind} #{rng.randint(1, 300)}"
    if style == 3:
        return f"RR {rng.randint(1, 9)} Box {rng.randint(10, 999)}"
    if style == 4:
        return f"W{rng.randint(1000, 9999)} County Road {rng.choice('KJMHZ')}"
    if style == 5:
        return f"{number} {name} {kind} Lot {rng.randint(1, 90)}"
    if style == 6:
        return f"{number} {rng.randint(2, 99)}th {kind} {rng.choice(('SW', 'NE', 'S'))}"
    if style == 7:
        return f"{number} {name.upper()} {kind.upper()} UNIT {rng.randint(1, 20)}"
    return f"{number} {name} {kind}"


def po_box(rng: random.Random) -> str:
    n = rng.randint(1, 9999)
    return rng.choice(
        (f"PO Box {n}", f"P.O. Box {n}", f"Post Office Box {n}", f"POB {n}", f"P O BOX {n}", f"PO Bx {n}")
    )


def zip_code(rng: random.Random) -> str:
    z = f"{rng.randint(1001, 99950):05d}"
    return f"{z}-{digits(rng, 4)}" if rng.random() < 0.3 else z


def facility(rng: random.Random) -> str:
    return rng.choice(pools.FACILITY_ABBREVIATIONS) if rng.random() < 0.1 else rng.choice(pools.FACILITIES)
